"""Small random-weight models in the shapes of SD1.5, SD2.1 and SDXL.

They are built deterministically from configs (the same classes as the real
models, so the same code runs them) and draw noise: they exist to test code paths
and shapes offline, not to make pictures.
"""

from __future__ import annotations

from pathlib import Path

import torch

from storyd.plan.tiny_configs import SCHEDULER_CONFIG, TEXT_CONFIG, UNET_CONFIGS, VAE_CONFIG


def build_unet(family: str, seed: int = 0):
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(**UNET_CONFIGS[family])


def build_tiny_pipeline(family: str, tokenizer_cache: Path, seed: int = 0):
    """A whole diffusers pipeline of the family's classes with small random weights."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from storyd.render.tokenizer import load_clip_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(family, seed)
        vae = AutoencoderKL(**VAE_CONFIG)
        text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
        scheduler_config = dict(SCHEDULER_CONFIG)
        if family == "sd21":
            scheduler_config["prediction_type"] = "v_prediction"
        scheduler = DDIMScheduler(**scheduler_config)
        tokenizer = load_clip_tokenizer(tokenizer_cache)
        if family != "sdxl":
            return StableDiffusionPipeline(
                vae=vae,
                text_encoder=text_encoder,
                tokenizer=tokenizer,
                unet=unet,
                scheduler=scheduler,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**TEXT_CONFIG))
        tokenizer_2 = load_clip_tokenizer(tokenizer_cache, pad_token="!")
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
        )


# IP-Adapter and ControlNet weights in the real repositories' file layouts, for tests: written to a
# folder that `storyd.weights.add` can register under the real lock names (h94/IP-Adapter,
# lllyasviel/control_v11p_sd15_openpose, ...), so the same store, loaders and code paths run them.
IMAGE_ENCODER_CONFIG = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
    projection_dim=32,
)
_IP_TOKENS = 4  # image tokens per image of the plain IP-Adapter


def write_tiny_ip_adapter(family: str, folder: Path, seed: int = 0) -> Path:
    """A random IP-Adapter for the tiny `family` UNet and its CLIP image encoder, laid out as h94/IP-Adapter
    (`models/image_encoder/`, and `models/ip-adapter_sd15.safetensors` or
    `sdxl_models/ip-adapter_sdxl_vit-h.safetensors`); returns `folder`."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from storyd.render.reference import ADAPTERS, IMAGE_ENCODER

    config = UNET_CONFIGS[family]
    cross, embed = config["cross_attention_dim"], IMAGE_ENCODER_CONFIG["projection_dim"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        CLIPVisionModelWithProjection(CLIPVisionConfig(**IMAGE_ENCODER_CONFIG)).save_pretrained(
            str(folder / IMAGE_ENCODER)
        )
        weights = {
            "image_proj.proj.weight": torch.randn(_IP_TOKENS * cross, embed) * 0.5,
            "image_proj.proj.bias": torch.randn(_IP_TOKENS * cross) * 0.1,
            "image_proj.norm.weight": torch.ones(cross),
            "image_proj.norm.bias": torch.zeros(cross),
        }
        unet = build_unet(family, seed)
        key_id = 1
        for name in unet.attn_processors:  # diffusers numbers the cross-attention layers 1, 3, 5, ...
            if name.endswith("attn1.processor"):
                continue
            hidden = unet.get_submodule(name.rsplit(".", 1)[0]).to_k.out_features
            weights[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.5
            weights[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.5
            key_id += 2
    path = folder / ADAPTERS[family][1]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    return folder


def build_tiny_controlnet(family: str, seed: int = 0):
    """A ControlNet made from the tiny `family` UNet, with random (not zero) output convolutions, so that
    it changes what the UNet draws."""
    from diffusers import ControlNetModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # the tiny VAE scales by 4, so the control image is brought down twice, not three times
        net = ControlNetModel.from_unet(build_unet(family, seed), conditioning_embedding_out_channels=(8, 16, 32))
        zero_init = [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]
        with torch.no_grad():
            for conv in zero_init:
                conv.weight.normal_(0, 0.3)
                conv.bias.normal_(0, 0.05)
    return net


def write_tiny_controlnet(family: str, folder: Path, seed: int = 0) -> Path:
    """`build_tiny_controlnet` saved as the hub holds ControlNets (config.json, diffusion_pytorch_model.safetensors)."""
    build_tiny_controlnet(family, seed).save_pretrained(str(folder))
    return folder


def write_tiny_pose_estimator(folder: Path, seed: int = 0) -> Path:
    """A ViTPose of random weights in the layout of usyd-community/vitpose-base-simple (17 COCO keypoints)."""
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation, VitPoseImageProcessor

    backbone = VitPoseBackboneConfig(
        image_size=[64, 48], patch_size=[8, 8], hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        mlp_ratio=2, out_indices=[2],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=17))
    model.save_pretrained(str(folder))
    VitPoseImageProcessor(size={"height": 64, "width": 48}).save_pretrained(str(folder))
    return folder


def write_tiny_person_detector(folder: Path, seed: int = 0) -> Path:
    """An RT-DETR of random weights, with COCO's "person" class, in the layout of PekingU/rtdetr_r50vd_coco_o365."""
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessor, RTDetrResNetConfig

    backbone = RTDetrResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1], layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )
    config = RTDetrConfig(
        backbone_config=backbone, encoder_in_channels=[16, 16, 32], encoder_hidden_dim=16, encoder_ffn_dim=32,
        encoder_layers=1, encoder_attention_heads=2, d_model=16, decoder_in_channels=[16, 16, 16],
        decoder_ffn_dim=32, decoder_layers=1, decoder_attention_heads=2, decoder_n_points=2, num_queries=10,
        num_denoising=0, id2label={0: "person", 1: "bicycle"}, label2id={"person": 0, "bicycle": 1},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RTDetrForObjectDetection(config)
    model.save_pretrained(str(folder))
    RTDetrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(str(folder))
    return folder


def write_tiny_depth_estimator(folder: Path, seed: int = 0) -> Path:
    """A DPT depth estimator of random weights (the architecture of Intel/dpt-hybrid-midas, without its BiT stem)."""
    from safetensors.torch import load_file
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    config = DPTConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64, image_size=32,
        patch_size=8, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
        head_in_index=-1, use_auxiliary_head=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DPTForDepthEstimation(config)
        with torch.no_grad():  # a neck and head of spread-out weights, so the depth map is not flat
            for module in [*model.neck.modules(), *model.head.modules()]:
                if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                    module.weight.normal_(0, 0.5)
                    if module.bias is not None:
                        module.bias.normal_(0, 0.1)
    model.save_pretrained(str(folder))
    # the repository ships pytorch_model.bin (what weights.lock pins), which transformers 5 no longer writes
    weights = folder / "model.safetensors"
    torch.save(load_file(str(weights)), folder / "pytorch_model.bin")
    weights.unlink()
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(str(folder))
    return folder
