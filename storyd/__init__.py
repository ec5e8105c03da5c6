"""storyd: turn a story into a consistent comic, and its panels into transition videos.

The public API (docs/api.md) is exported lazily: each name imports its module on first use,
so `import storyd` and `storyd --help` stay free of torch and diffusers.
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

# name -> the module that defines it ("module:name" where the API's name differs: the function
# `storyd.animate.animate` is `animate_frames` here, as `storyd.animate` is its subpackage).
_EXPORTS = {
    # 1. the story as written
    "load_story": "storyd.story.loader",
    "Story": "storyd.story.model",
    "ConsistencySettings": "storyd.story.model",
    "LayoutSettings": "storyd.story.model",
    # 2. the plan: prompts, seeds, roles, estimates; no model
    "plan_story": "storyd.plan.render_plan",
    "RenderPlan": "storyd.plan.render_plan",
    "resolve_consistency": "storyd.plan.settings",
    # 3. drawing: panels, pages and the manifest
    "render_comic": "storyd.comic",
    "ComicOptions": "storyd.comic",
    "ComicResult": "storyd.comic",
    "MemorySettings": "storyd.render.memory",
    "pick_device": "storyd.render.device",
    # 4. layout alone: panel images to pages
    "load_panel_images": "storyd.layout",
    "render_pages": "storyd.layout",
    "write_pages": "storyd.layout",
    # 5. transition videos
    "animate_frames": "storyd.animate:animate",
    "AnimationResult": "storyd.animate",
    # 6. evaluation
    "evaluate": "storyd.eval",
    "EvalReport": "storyd.eval",
    # errors
    "StorydError": "storyd.errors",
    "InputError": "storyd.errors",
    "SettingError": "storyd.errors",
    "WeightsError": "storyd.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'storyd' has no attribute {name!r}")
    module, _, attribute = _EXPORTS[name].partition(":")
    return getattr(import_module(module), attribute or name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
