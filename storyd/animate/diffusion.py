"""The video diffusion backend: SD1.5 + AnimateDiff, conditioned frame by frame on predicted CLIP embeddings.

Per transition: both keyframes are encoded into token-level CLIP embeddings;
the motion predictor (or spherical interpolation) gives one embedding per frame;
each frame's pooled embedding becomes image tokens for that frame's
cross-attention (see :mod:`storyd.animate.image_prompt`). The first and last
frames are held to the keyframes two ways: SparseCtrl-RGB sees the keyframe
latents at both ends (when that model is loaded), and at every step the end
latents are replaced by the keyframe latents noised to the current timestep
(latent anchoring, ``SamplerConfig.anchor``). Nothing is pasted over the decoded
frames. Transitions longer than the motion module's window are denoised in
overlapping windows whose noise predictions are averaged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from storyd.animate.image_prompt import (
    ImagePromptProjection,
    ImagePromptState,
    build_image_prompt_processors,
    image_prompt_installed,
    load_image_prompt_weights,
)
from storyd.animate.motion import SemanticMotionPredictor, predict_embeddings
from storyd.errors import InputError

# Weights lock entries this backend needs (see weights.lock).
REQUIRED_WEIGHTS = (
    "clip-vit-h-14", "sd15-diffusers", "animatediff-motion-v1-5-3", "sparsectrl-rgb", "ip-adapter-sd15",
)


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = 25
    guidance_scale: float = 7.5
    image_prompt_scale: float = 0.7
    control_scale: float = 1.0
    window: int = 16  # AnimateDiff v3 motion modules are trained on 16 frames
    stride: int = 8  # window start step; window − stride frames overlap
    negative_prompt: str = ""
    anchor: bool = True  # hold the end latents to the noised keyframe latents at every step


@dataclass
class VideoModels:
    """Everything the sampler runs; built from pinned weights by :func:`load_video_models`, or tiny in tests."""

    unet: torch.nn.Module  # diffusers UNetMotionModel
    vae: torch.nn.Module  # diffusers AutoencoderKL
    scheduler: object  # a diffusers scheduler, e.g. DDIMScheduler
    encode_prompt: Callable[[list[str]], torch.Tensor]  # prompts → (B, 77, D) text embeddings
    image_projection: ImagePromptProjection
    image_prompt: ImagePromptState
    processors: dict = field(default_factory=dict)  # processor key → PerFrameImagePromptAttnProcessor
    controlnet: torch.nn.Module | None = None  # diffusers SparseControlNetModel (RGB), optional

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype


def window_starts(frames: int, window: int, stride: int) -> list[int]:
    """Start indices of overlapping windows covering 0..frames-1; the last window ends at the last frame."""
    if frames <= window:
        return [0]
    starts = list(range(0, frames - window + 1, max(1, stride)))
    if starts[-1] != frames - window:
        starts.append(frames - window)
    return starts


@torch.no_grad()
def sample_transition(
    models: VideoModels,
    start: Image.Image,
    end: Image.Image,
    frame_embeds: torch.Tensor,
    prompt: str,
    config: SamplerConfig,
    generator: torch.Generator,
    on_step: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Denoise a (1, 4, L, h, w) latent video from ``start`` to ``end``; ``frame_embeds`` is (L, C).

    Returns L uint8 frames of the keyframes' size, all as the VAE decodes them: no keyframe is
    pasted over the result, so a weak conditioning shows in the output.
    """
    device, dtype = models.device, models.dtype
    frames = frame_embeds.shape[0]
    width, height = start.size
    scale_factor = 2 ** (len(models.vae.config.block_out_channels) - 1)
    if width % scale_factor or height % scale_factor:
        raise ValueError(f"size {width}x{height} is not divisible by the VAE factor {scale_factor}")
    cfg = config.guidance_scale > 1.0

    text = models.encode_prompt([config.negative_prompt, prompt] if cfg else [prompt]).to(device, dtype)
    embeds = frame_embeds.to(device, dtype)
    image_tokens = models.image_projection(embeds)  # (L, T, D)
    if cfg:  # IP-Adapter's unconditional image prompt is the projection of a zero embedding
        image_tokens = torch.stack([models.image_projection(torch.zeros_like(embeds)), image_tokens])  # (2, L, T, D)
    else:
        image_tokens = image_tokens.unsqueeze(0)

    keys = _encode_images(models.vae, [start, end], device, dtype)  # (2, 4, h, w)
    shape = (1, keys.shape[1], frames, keys.shape[2], keys.shape[3])
    latents = torch.randn(shape, generator=generator, device="cpu", dtype=torch.float32).to(device, dtype)
    anchor_noise = torch.randn((2, *keys.shape[1:]), generator=generator, device="cpu").to(device, dtype)
    scheduler = models.scheduler
    scheduler.set_timesteps(config.steps, device=device)
    latents = latents * scheduler.init_noise_sigma
    control = _control_inputs(keys, frames) if models.controlnet is not None else None

    with image_prompt_installed(models.unet, models.processors):
        models.image_prompt.scale = config.image_prompt_scale
        timesteps = list(scheduler.timesteps)
        for step, t in enumerate(timesteps):
            if config.anchor:
                noised = scheduler.add_noise(keys, anchor_noise, t.reshape(1).expand(2))  # (2, 4, h, w)
                latents[:, :, 0], latents[:, :, -1] = noised[0], noised[1]
            prediction = torch.zeros_like(latents)
            weight = torch.zeros((1, 1, frames, 1, 1), device=device, dtype=dtype)
            for s in window_starts(frames, config.window, config.stride):
                e = min(frames, s + config.window)
                chunk = latents[:, :, s:e]
                batch = torch.cat([chunk, chunk]) if cfg else chunk
                batch = scheduler.scale_model_input(batch, t)
                # UNetMotionModel folds frames into the batch, batch-major, and expects the conditioning so too.
                context = text.repeat_interleave(e - s, dim=0)  # (B·F, 77, D)
                models.image_prompt.tokens = image_tokens[:, s:e].flatten(0, 1)  # (B·F, T, D)
                residuals = {}
                if control is not None:
                    cond, mask = (x[:, :, s:e].repeat(batch.shape[0], 1, 1, 1, 1) for x in control)
                    down, mid = models.controlnet(
                        batch, t, encoder_hidden_states=context, controlnet_cond=cond, conditioning_mask=mask,
                        conditioning_scale=config.control_scale, return_dict=False,
                    )
                    residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
                noise = models.unet(batch, t, encoder_hidden_states=context, **residuals).sample
                if cfg:
                    uncond, cond_noise = noise.chunk(2)
                    noise = uncond + config.guidance_scale * (cond_noise - uncond)
                prediction[:, :, s:e] += noise
                weight[:, :, s:e] += 1
            latents = scheduler.step(prediction / weight, t, latents, generator=generator).prev_sample
            if on_step is not None:
                on_step(step + 1, len(timesteps))
        models.image_prompt.tokens = None
    return list(_decode_latents(models.vae, latents[0].transpose(0, 1)))  # (L, H, W, 3) uint8, nothing pasted


def _encode_images(vae, images: list[Image.Image], device, dtype) -> torch.Tensor:
    pixels = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 127.5 - 1 for im in images])
    tensor = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(device, dtype)  # (B, 3, H, W) in [-1, 1]
    return vae.encode(tensor).latent_dist.mean * vae.config.scaling_factor


def _decode_latents(vae, latents: torch.Tensor, chunk: int = 8) -> np.ndarray:
    out = []
    for piece in latents.split(chunk):  # (≤chunk, 4, h, w)
        images = vae.decode(piece / vae.config.scaling_factor).sample  # (n, 3, H, W) in [-1, 1]
        out.append(((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)


def _control_inputs(keys: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseCtrl-RGB inputs: keyframe latents at frames 0 and L−1, zeros elsewhere, and the 0/1 frame mask."""
    _, channels, h, w = keys.shape
    cond = torch.zeros((1, channels, frames, h, w), device=keys.device, dtype=keys.dtype)
    mask = torch.zeros((1, 1, frames, h, w), device=keys.device, dtype=keys.dtype)
    cond[0, :, 0], cond[0, :, -1] = keys[0], keys[1]
    mask[:, :, [0, -1]] = 1
    return cond, mask


@dataclass
class DiffusionBackend:
    """``Backend`` for :func:`storyd.animate.animate`: encoder → motion predictor → video sampler."""

    models: VideoModels
    encoder: object  # storyd.animate.encoder.ClipImageEncoder
    predictor: SemanticMotionPredictor | None = None
    config: SamplerConfig = field(default_factory=SamplerConfig)
    seed: int = 0
    name: str = "animatediff"

    def render(self, start: Image.Image, end: Image.Image, frames: int, prompt: str | None = None) -> list[np.ndarray]:
        tokens = self.encoder.encode([start, end])  # (2, N, C)
        if self.predictor is not None:
            limit = self.predictor.config.max_frames
            if frames > limit:
                raise InputError(f"--frames {frames} is more than the motion predictor's {limit}",
                                 f"pass --frames {limit} or fewer, or train with --frames {frames}")
            tokens = tokens.to(next(self.predictor.parameters()).device)
        per_frame = predict_embeddings(tokens[:1], tokens[1:], frames, self.predictor)  # (1, L, N, C)
        generator = torch.Generator("cpu").manual_seed(self.seed)
        return sample_transition(self.models, start, end, per_frame[0, :, 0], prompt or "", self.config, generator)


def resolve_weights() -> dict[str, Path]:
    """The local folders of every entry in REQUIRED_WEIGHTS; raises WeightsError naming what to pull."""
    from storyd.weights import load_lock, resolve

    lock = load_lock()
    return {name: Path(resolve(lock.get(name))) for name in REQUIRED_WEIGHTS}


def load_video_models(
    folders: dict[str, Path], device: str, dtype: torch.dtype = torch.float16
) -> tuple[VideoModels, object]:
    """Load the video models and the CLIP image encoder from the verified local snapshots (offline)."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        MotionAdapter,
        SparseControlNetModel,
        UNet2DConditionModel,
        UNetMotionModel,
    )
    from safetensors.torch import load_file
    from transformers import CLIPTextModel, CLIPTokenizer

    from storyd.animate.encoder import load_clip_encoder

    sd15, motion = folders["sd15-diffusers"], folders["animatediff-motion-v1-5-3"]
    sparse, ip = folders["sparsectrl-rgb"], folders["ip-adapter-sd15"]
    tokenizer = CLIPTokenizer.from_pretrained(str(sd15 / "tokenizer"), local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(str(sd15), subfolder="text_encoder", dtype=dtype).to(device)
    vae = AutoencoderKL.from_pretrained(str(sd15), subfolder="vae", torch_dtype=dtype).to(device)
    unet2d = UNet2DConditionModel.from_pretrained(str(sd15), subfolder="unet", torch_dtype=dtype)
    adapter = MotionAdapter.from_pretrained(str(motion), torch_dtype=dtype)
    unet = UNetMotionModel.from_unet2d(unet2d, adapter).to(device, dtype).eval()
    controlnet = SparseControlNetModel.from_pretrained(str(sparse), torch_dtype=dtype).to(device).eval()
    scheduler = DDIMScheduler.from_pretrained(
        str(sd15), subfolder="scheduler", beta_schedule="linear", clip_sample=False, timestep_spacing="linspace",
        steps_offset=1,
    )

    def encode_prompt(prompts: list[str]) -> torch.Tensor:
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        return text_encoder(ids.to(device))[0]

    state = ImagePromptState()
    # CLIP ViT-H/14: the image encoder IP-Adapter SD1.5 was trained with, and the one the motion predictor learns on.
    encoder = load_clip_encoder(folders["clip-vit-h-14"], device=device, dtype=dtype)
    projection = ImagePromptProjection(encoder.embed_dim, unet.config.cross_attention_dim)
    processors = build_image_prompt_processors(unet, state)
    ip_weights = load_file(str(ip / "models" / "ip-adapter_sd15.safetensors"))
    load_image_prompt_weights(projection, processors, unet, ip_weights)
    projection.to(device, dtype)
    for processor in processors.values():
        processor.to(device, dtype)
    models = VideoModels(unet, vae, scheduler, encode_prompt, projection, state, processors, controlnet)
    return models, encoder


def load_diffusion_backend(
    *, motion_weights: Path | None, seed: int, note: Callable[[str], None], device: str
) -> DiffusionBackend:
    """The diffusion backend on the pinned weights, on ``device`` (already chosen by ``pick_device``);
    raises WeightsError naming what to pull."""
    from storyd.animate.motion import load_predictor

    folders = resolve_weights()  # fail before any note or model load
    if not device.startswith("cuda"):
        note(f"no CUDA GPU: the animatediff backend runs on {device} in float32 and will be very slow")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    predictor = None
    if motion_weights is not None:
        predictor, _ = load_predictor(motion_weights, device)
    else:
        note("no trained motion predictor (train one with `storyd train-motion`); "
             "using spherical interpolation of the CLIP embeddings")
    models, encoder = load_video_models(folders, device, dtype)
    if predictor is not None:
        predictor.to(dtype)
    return DiffusionBackend(models, encoder, predictor, seed=seed)
