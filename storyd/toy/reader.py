"""Read a toy-world image back into attributes: setting, and per character action and look.

A small multi-head CNN trained on the world's own renders (see ``reader_train``).
Characters are read in slots, left to right: slot 0 is the only character of a
one-character image. The last feature map is flattened rather than pooled, so
the heads know where things are and can tell the left character from the right.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from storyd.toy.world import ACTIONS, LOOK_CHOICES, SETTINGS, Scene

SLOTS = 2
FIGURE_HEADS: dict[str, tuple] = {"action": ACTIONS, **LOOK_CHOICES}
HEADS: dict[str, tuple] = {
    "setting": tuple(SETTINGS),
    "count": (1, 2),
    **{f"char{i}.{name}": values for i in range(SLOTS) for name, values in FIGURE_HEADS.items()},
}
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "assets" / "toy" / "reader"


class ReaderNet(nn.Module):
    def __init__(self, width: int = 24) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 64, 64]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans, chans[1:]):  # 64 -> 32 -> 16 -> 8 -> 4 px
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 192), nn.ReLU())
        self.heads = nn.ModuleDict({name.replace(".", "_"): nn.Linear(192, len(v)) for name, v in HEADS.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(self.features(x))  # (B, 192)
        return {name: self.heads[name.replace(".", "_")](h) for name in HEADS}


def images_to_tensor(images) -> torch.Tensor:
    """PIL images (any size; resized to 64) -> (B, 3, 64, 64) floats in [-1, 1]."""
    arrays = [np.asarray(im.convert("RGB").resize((64, 64)) if im.size != (64, 64) else im.convert("RGB"))
              for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def tensor_to_images(x: torch.Tensor) -> list[Image.Image]:
    """The inverse of `images_to_tensor`: (B, 3, H, W) in [-1, 1] -> PIL images."""
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in pixels]


def scene_labels(scene: Scene) -> dict[str, int]:
    """Class indices of every head for ``scene``; heads of an empty slot are -1 (ignored)."""
    labels = {"setting": HEADS["setting"].index(scene.setting), "count": len(scene.figures) - 1}
    for i in range(SLOTS):
        fig = scene.figures[i] if i < len(scene.figures) else None
        for name, values in FIGURE_HEADS.items():
            value = None if fig is None else fig.action if name == "action" else getattr(fig.look, name)
            labels[f"char{i}.{name}"] = -1 if fig is None else values.index(value)
    return labels


class AttributeReader:
    """Reads images into ``{"setting", "count", "figures": [{"action", <look attrs>...}, ...]}``."""

    def __init__(self, net: ReaderNet) -> None:
        self.net = net.eval()

    @classmethod
    def load(cls, folder: Path = DEFAULT_DIR) -> AttributeReader:
        from safetensors.torch import load_file

        config = json.loads((folder / "config.json").read_text())
        net = ReaderNet(config["width"])
        net.load_state_dict({k: v.float() for k, v in load_file(folder / "model.safetensors").items()})
        return cls(net)

    def save(self, folder: Path, extra: dict | None = None) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous()
                 for k, v in self.net.state_dict().items()}
        save_file(state, folder / "model.safetensors")
        config = {"width": self.net.features[0].out_channels, "heads": {k: list(v) for k, v in HEADS.items()}}
        (folder / "config.json").write_text(json.dumps({**config, **(extra or {})}, indent=2) + "\n")

    @torch.no_grad()
    def logits(self, images, batch: int = 256) -> dict[str, torch.Tensor]:
        outs: dict[str, list[torch.Tensor]] = {name: [] for name in HEADS}
        for i in range(0, len(images), batch):
            for name, value in self.net(images_to_tensor(images[i : i + batch])).items():
                outs[name].append(value)
        return {name: torch.cat(v) for name, v in outs.items()}

    def read(self, images) -> list[dict]:
        """One attribute dict per image; ``figures`` has ``count`` entries, left to right."""
        logits = self.logits(list(images))
        best = {name: v.argmax(dim=1).tolist() for name, v in logits.items()}
        results = []
        for j in range(len(images)):
            count = HEADS["count"][best["count"][j]]
            figures = [
                {name: values[best[f"char{i}.{name}"][j]] for name, values in FIGURE_HEADS.items()}
                for i in range(count)
            ]
            results.append({"setting": HEADS["setting"][best["setting"][j]], "count": count, "figures": figures})
        return results
