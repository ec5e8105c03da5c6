"""A tiny DreamSim ``dino_vitb16`` release for the tests, laid out as the real zip is.

The zip holds ``dino_vitb16_pretrain.pth`` (a DINO training checkpoint: ``student`` and
``teacher``, each a backbone and a head) and ``dino_vitb16_single_lora/`` (a peft
adapter saved by peft from a LoRA on the backbone's layers, wrapped the way DreamSim
wraps it). The backbone is a minimal DINO VisionTransformer written out here, so its
forward pass with peft's unmerged LoRA is the reference the converted ViTModel must match.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

WIDTH, HEADS, DEPTH, PATCH, IMAGE, MLP = 128, 2, 2, 8, 32, 96  # 64-wide heads, as DINO's
RELEASE = "dreamsim_dino_vitb16_checkpoint.zip"


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (c // HEADS) ** -0.5).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(WIDTH, MLP), nn.GELU(), nn.Linear(MLP, WIDTH)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(WIDTH, eps=1e-6), Attention()
        self.norm2, self.mlp = nn.LayerNorm(WIDTH, eps=1e-6), Mlp()

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, WIDTH, PATCH, PATCH)


class TinyDino(nn.Module):
    """DINO's VisionTransformer, tiny; ``forward`` returns the last block's tokens (before ``norm``)."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed()
        self.cls_token = nn.Parameter(torch.randn(1, 1, WIDTH))
        self.pos_embed = nn.Parameter(torch.randn(1, (IMAGE // PATCH) ** 2 + 1, WIDTH))
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(WIDTH, eps=1e-6)
        with torch.no_grad():  # LayerNorms that are not the identity, so a mix-up shows
            for norm in [self.norm, *(b.norm1 for b in self.blocks), *(b.norm2 for b in self.blocks)]:
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.normal_(0, 0.1)

    def forward(self, pixels):
        x = self.patch_embed.proj(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x


class Extractor(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model


class Perceptual(nn.Module):
    """DreamSim's module path to the backbone: extractor_list.0.model."""

    def __init__(self, model) -> None:
        super().__init__()
        self.extractor_list = nn.ModuleList([Extractor(model)])

    def forward(self, pixels):
        return self.extractor_list[0].model(pixels)


def reference_embeddings(model, pixels):
    """DreamSim's embedding, written out: last block's class token, minus its mean, unit length."""
    with torch.no_grad():
        cls = model(pixels)[:, 0]
    centred = cls - cls.mean(dim=1, keepdim=True)
    return centred / centred.norm(dim=1, keepdim=True)


def build_release(folder: Path, *, adapter_format: str = "bin", seed: int = 0, targets=("qkv", "fc2")):
    """Write the tiny release zip into ``folder``; return (zip path, the peft model it must reproduce)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    teacher, student = TinyDino().eval(), TinyDino().eval()  # the backbone is the teacher's
    head = {"head.mlp.0.weight": torch.randn(16, WIDTH), "head.last_layer.weight_g": torch.ones(32, 1)}
    checkpoint = {
        "teacher": {**{f"backbone.{k}": v for k, v in teacher.state_dict().items()}, **head},
        "student": {**{f"module.backbone.{k}": v for k, v in student.state_dict().items()},
                    **{f"module.{k}": v for k, v in head.items()}},
    }
    config = LoraConfig(r=4, lora_alpha=6, lora_dropout=0.0, bias="none", target_modules=list(targets),
                        init_lora_weights=False)  # random A and B: the update is not zero
    peft_model = get_peft_model(Perceptual(teacher), config).eval()
    stage = folder / "stage"
    lora_dir = stage / "dino_vitb16_single_lora"
    peft_model.save_pretrained(str(lora_dir), safe_serialization=adapter_format == "safetensors")
    torch.save(checkpoint, stage / "dino_vitb16_pretrain.pth")
    archive = folder / RELEASE
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(stage.rglob("*")):
            if path.is_file() and path.name != "README.md":
                zf.write(path, path.relative_to(stage).as_posix())
    return archive, peft_model
