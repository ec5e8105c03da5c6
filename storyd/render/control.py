"""Pose and composition control: a panel's `control:` entry drawn through a ControlNet.

The control image may be the map itself: an OpenPose skeleton (`pose`, mostly black), an
edge map (`canny`, black and white) or a depth map (`depth`, grey, near is bright). Anything
else is a photo (or a drawing) and is turned into the map: Canny edges with OpenCV
(thresholds 100 and 200, at the panel's size), a pose skeleton or a depth map with the
pinned annotators (storyd.render.annotators, on the whole photo). A detected pose or depth
map is saved beside the panel (`panels/control/`) so the user can check it. The image is
cropped to the panel's aspect ratio around its centre and scaled to the panel's size.

ControlNets only add residuals to the UNet's down and mid blocks, so the UNet's
attention processors (CSA's included) stay as they are and CSA still holds the
character. Batches are left as the plan makes them (a character's reference panels stay
together). In a batch, each ControlNet runs once per panel that uses it (both guidance
halves together), scaled by that panel's strength; the other panels get residuals of
exactly 0, which leaves them as a run without the ControlNet draws them, and cost no
ControlNet time. Running per panel also makes a panel's residuals independent of its
batch-mates. A batch with no control at all runs the plain pipeline.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from storyd.fsutil import file_sha256
from storyd.story.model import PanelControl

WEIGHT_NAMES = {"pose": "openpose", "canny": "canny", "depth": "depth"}  # kind -> the lock entries' word for it
FAMILIES = ("sd15", "sdxl")
# kind -> the lock entries of its detector (pose: the pose estimator, then the person detector)
ANNOTATOR_WEIGHTS = {"pose": ("annotator-pose", "annotator-person"), "depth": ("annotator-depth",)}


def controlnet_for(preset, kind: str) -> str | None:
    """The weights.lock entry of the ControlNet of `kind` for a preset, or None where storyd has none
    (the embedded toy model and SD2.1)."""
    if preset.source not in ("lock", "tiny") or preset.family not in FAMILIES:
        return None
    return f"controlnet-{WEIGHT_NAMES[kind]}-{preset.family}"


def panel_control(plan, job) -> PanelControl | None:
    """The control this panel is drawn with: its `control:` entry, unless its strength is 0 or the
    model has no ControlNet of that kind."""
    control = plan.story.panels[job.index].control
    if control is None or control.strength <= 0 or controlnet_for(plan.preset, control.kind) is None:
        return None
    return control


def required_weights(plan) -> list[str]:
    controls = [c for c in (panel_control(plan, j) for j in plan.jobs) if c is not None]
    nets = [controlnet_for(plan.preset, kind) for kind in sorted({c.kind for c in controls})]
    return nets + [name for kind in detected_kinds(controls) for name in ANNOTATOR_WEIGHTS[kind]]


def needs_detection(control: PanelControl) -> bool:
    """Whether a `pose` or `depth` control's image is a photo, to be turned into the map by an annotator."""
    if control.kind not in ANNOTATOR_WEIGHTS:
        return False
    import numpy as np

    from storyd.images import open_rgb
    from storyd.render.annotators import is_map

    return not is_map(control.kind, np.asarray(open_rgb(control.image, "control image")))


def detected_kinds(controls) -> list[str]:
    """The kinds among `controls` (None for none) whose image an annotator must turn into the map."""
    return sorted({c.kind for c in controls if c is not None and needs_detection(c)})


def hash_inputs(plan, job) -> dict:
    """What of the control decides this panel's pixels (empty without control)."""
    control = panel_control(plan, job)
    if control is None:
        return {}
    from storyd.weights import load_lock

    lock = load_lock()
    entry = lock.get(controlnet_for(plan.preset, control.kind))
    record = {
        "kind": control.kind,
        "image": file_sha256(control.image),
        "strength": control.strength,
        "controlnet": entry.name,
        "revision": entry.revision,
    }
    if needs_detection(control):  # the annotator decides the map, so its version decides the pixels
        names = ANNOTATOR_WEIGHTS[control.kind]
        record["annotator"] = [{"name": name, "revision": lock.get(name).revision} for name in names]
    return {"control": record}


def control_warnings(plan) -> list[str]:
    panels = [p.index + 1 for p in plan.story.panels if p.control is not None and p.control.strength > 0]
    if not panels or controlnet_for(plan.preset, "pose") is not None:
        return []
    listed = ("panel " if len(panels) == 1 else "panels ") + ", ".join(str(i) for i in panels)
    return [
        f"model '{plan.preset.name}' has no ControlNet, so the control of {listed} is not used "
        "(it works on sd15 and sdxl)"
    ]


def looks_like_edges(gray) -> bool:
    """Whether a greyscale array (H, W) already is an edge map: nearly all pixels black or white,
    and mostly black (thin white lines)."""
    import numpy as np

    extreme = np.mean((gray < 32) | (gray > 223))
    return bool(extreme >= 0.97 and np.mean(gray > 127) < 0.5)


def control_image(control: PanelControl, width: int, height: int, detectors: dict | None = None):
    """The image the ControlNet sees, cropped and scaled to the panel: the map as given, or the map
    detected in a photo (Canny edges; pose and depth by `detectors`, kind -> annotator)."""
    import numpy as np
    from PIL import Image, ImageOps

    from storyd.images import open_rgb

    image = open_rgb(control.image, "control image")
    if needs_detection(control):
        if not detectors or control.kind not in detectors:
            raise RuntimeError(f"no {control.kind} annotator is loaded for {control.image}")
        image = detectors[control.kind](image)
    fitted = ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    if control.kind == "canny" and not looks_like_edges(np.asarray(image.convert("L"))):
        import cv2

        return Image.fromarray(cv2.Canny(np.asarray(fitted.convert("L")), 100, 200)).convert("RGB")
    return fitted


@dataclass
class ControlNets:
    """The ControlNets a run uses, the per-image strengths the current batch gives them, and the
    ControlNet pipelines built over the run's pipeline (sharing its modules)."""

    nets: dict  # kind -> diffusers ControlNetModel
    weights: dict = field(default_factory=dict)  # kind -> (B,) per-image residual scale for the current batch
    pipes: dict = field(default_factory=dict)  # kinds -> pipeline
    detectors: dict = field(default_factory=dict)  # kind -> annotator (storyd.render.annotators), for photos
    detected: list = field(default_factory=list)  # per panel of the current batch: the detected map, or None

    def per_panel(self, kind: str, forward):
        """A ControlNet `forward` that runs `forward` once per panel whose weight for `kind` is not 0
        (its rows in every guidance half), at conditioning scale x weight, and leaves 0 for the rest."""
        import torch

        def run(sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale=1.0, **kwargs):
            n, weights = sample.shape[0], self.weights[kind].tolist()
            down_all = mid_all = None
            for i, weight in enumerate(weights):
                if weight == 0:
                    continue
                rows = list(range(i, n, len(weights)))  # image i in each guidance half

                def pick(value, rows=rows):
                    if isinstance(value, dict):
                        return {k: pick(v) for k, v in value.items()}
                    is_batch = isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == n
                    return value[rows] if is_batch else value

                args = (pick(sample), pick(timestep), pick(encoder_hidden_states), pick(controlnet_cond))
                down, mid = forward(*args, conditioning_scale * weight, **{k: pick(v) for k, v in kwargs.items()})
                if down_all is None:
                    down_all = [d.new_zeros((n, *d.shape[1:])) for d in down]
                    mid_all = mid.new_zeros((n, *mid.shape[1:]))
                for whole, part in zip(down_all, down):
                    whole[rows] = part
                mid_all[rows] = mid
            if down_all is None:
                raise RuntimeError(f"the {kind} ControlNet was called for a batch in which no panel uses it")
            return down_all, mid_all

        return run

    def prepare(self, pipe, controls: list[PanelControl | None], *, width: int, height: int):
        """(the pipeline to call, its extra arguments) for a batch whose panels have `controls`."""
        import torch

        kinds = sorted({c.kind for c in controls if c is not None})
        if not kinds:
            self.detected = [None] * len(controls)
            return pipe, {}
        for kind in self.nets:
            strengths = [c.strength if c is not None and c.kind == kind else 0.0 for c in controls]
            self.weights[kind] = torch.tensor(strengths, dtype=torch.float32)
        from PIL import Image

        blank = Image.new("RGB", (width, height))
        images = {
            kind: [
                control_image(c, width, height, self.detectors) if c is not None and c.kind == kind else blank
                for c in controls
            ]
            for kind in kinds
        }
        self.detected = [
            images[c.kind][i] if c is not None and c.kind in self.detectors and needs_detection(c) else None
            for i, c in enumerate(controls)
        ]
        if len(kinds) == 1:
            return self._pipeline(pipe, tuple(kinds)), {"image": images[kinds[0]], "controlnet_conditioning_scale": 1.0}
        return self._pipeline(pipe, tuple(kinds)), {
            "image": [[images[k][i] for k in kinds] for i in range(len(controls))],  # per panel, one per ControlNet
            "controlnet_conditioning_scale": [1.0] * len(kinds),
        }

    def _pipeline(self, pipe, kinds: tuple[str, ...]):
        if kinds not in self.pipes:
            self.pipes[kinds] = controlnet_pipeline(pipe, [self.nets[k] for k in kinds])
        return self.pipes[kinds]


def controlnet_pipeline(pipe, nets: list):
    """The ControlNet pipeline of `pipe`'s family over `pipe`'s own modules (nothing is copied or moved)."""
    from diffusers import (
        StableDiffusionControlNetPipeline,
        StableDiffusionXLControlNetPipeline,
        StableDiffusionXLPipeline,
    )

    xl = isinstance(pipe, StableDiffusionXLPipeline)
    cls = StableDiffusionXLControlNetPipeline if xl else StableDiffusionControlNetPipeline
    params = inspect.signature(cls.__init__).parameters
    kwargs = {name: module for name, module in pipe.components.items() if name in params}
    if "requires_safety_checker" in params:
        kwargs["requires_safety_checker"] = False
    if "force_zeros_for_empty_prompt" in params:
        kwargs["force_zeros_for_empty_prompt"] = pipe.config.get("force_zeros_for_empty_prompt", True)
    if "add_watermarker" in params:
        kwargs["add_watermarker"] = getattr(pipe, "watermark", None) is not None
    control_pipe = cls(**kwargs, controlnet=nets[0] if len(nets) == 1 else list(nets))
    control_pipe.set_progress_bar_config(disable=True)
    return control_pipe


@contextlib.contextmanager
def control_nets(pipe, plan, *, device: str, weights_dir: Path | None = None) -> Iterator[ControlNets | None]:
    """Load the ControlNets the story's panels use (None when none does), on `device` in the UNet's
    dtype; they are dropped on exit."""
    names = required_weights(plan)
    if not names:
        yield None
        return
    from diffusers import ControlNetModel

    from storyd.render.annotators import DETECTORS
    from storyd.weights import load_lock, resolve

    lock = load_lock()
    controls = [panel_control(plan, j) for j in plan.jobs]
    kinds = sorted({c.kind for c in controls if c is not None})
    state = ControlNets({})
    for kind in detected_kinds(controls):
        folders = [resolve(lock.get(name), weights_dir) for name in ANNOTATOR_WEIGHTS[kind]]
        state.detectors[kind] = DETECTORS[kind](*folders, device=device)
    for kind in kinds:
        folder = resolve(lock.get(controlnet_for(plan.preset, kind)), weights_dir)
        net = ControlNetModel.from_pretrained(str(folder), local_files_only=True, torch_dtype=pipe.unet.dtype)
        net = net.to(device).eval()
        net.forward = state.per_panel(kind, net.forward)  # this instance only; it is storyd's own, for this run
        state.nets[kind] = net
    try:
        yield state
    finally:
        state.nets.clear()
        state.pipes.clear()
        state.detectors.clear()
