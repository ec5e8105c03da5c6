"""Keyframes to transition videos: ``storyd animate`` as a library.

Importing this package is cheap: torch, diffusers and OpenCV load only when a backend runs.
"""

from storyd.animate.frames import Keyframe, load_keyframes
from storyd.animate.run import BACKENDS, AnimationResult, Backend, Scorer, animate

__all__ = ["BACKENDS", "AnimationResult", "Backend", "Keyframe", "Scorer", "animate", "load_keyframes"]
