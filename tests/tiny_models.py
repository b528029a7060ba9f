"""Tiny random-weight diffusers models, built offline from configs (no weights download).

As diffusers' own tests do: a small UNet, VAE and CLIP text encoder, and a CLIP
tokenizer written from a local character-level vocabulary; saved with
`save_pretrained` so that a catalog can name them and a worker load them with
`local_files_only`. `scale` widens the UNet for a benchmark that wants slower steps.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any


def tokenizer(folder: Path) -> Any:
    """A CLIP tokenizer over single characters (enough for any ASCII prompt)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in (c for c in string.printable if not c.isspace()):
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                         model_max_length=77, pad_token="<|endoftext|>")


def _text_encoder(vocab_size: int, width: int = 8) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, vocab_size=vocab_size,
        hidden_size=width, intermediate_size=2 * width, projection_dim=width,
        num_attention_heads=2, num_hidden_layers=2, layer_norm_eps=1e-5))


def stable_diffusion(folder: Path, scale: int = 1, seed: int = 0) -> Path:
    """A Stable Diffusion pipeline (text-to-image; image-to-image from the same weights)."""
    import torch
    from diffusers import (
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(seed)
    words = tokenizer(folder.parent / f"{folder.name}-tokenizer")
    unet = UNet2DConditionModel(
        block_out_channels=(4 * scale, 8 * scale), layers_per_block=1, sample_size=8,
        in_channels=4, out_channels=4, cross_attention_dim=8, attention_head_dim=2,
        norm_num_groups=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    pipeline = StableDiffusionPipeline(
        unet=unet, vae=_vae(2), text_encoder=_text_encoder(len(words)), tokenizer=words,
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012,
                                beta_schedule="scaled_linear", clip_sample=False,
                                set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(folder)
    return folder


def _vae(blocks: int, scaling_factor: float = 0.18215) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[4 * 2**min(i, 1) for i in range(blocks)], in_channels=3,
        out_channels=3, latent_channels=4, norm_num_groups=2, scaling_factor=scaling_factor,
        down_block_types=["DownEncoderBlock2D"] * blocks,
        up_block_types=["UpDecoderBlock2D"] * blocks)


def controlnet(folder: Path, seed: int = 0) -> Path:
    """A ControlNet shaped for `stable_diffusion`'s UNet."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    ControlNetModel(
        block_out_channels=(4, 8), layers_per_block=1, in_channels=4, cross_attention_dim=8,
        attention_head_dim=2, norm_num_groups=2, conditioning_embedding_out_channels=(4, 8),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D")).save_pretrained(folder)
    return folder


def upscaler(folder: Path, seed: int = 0) -> Path:
    """A x4 upscaler shaped like Stable Diffusion's (a three-level VAE)."""
    import torch
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(seed)
    words = tokenizer(folder.parent / f"{folder.name}-tokenizer")
    unet = UNet2DConditionModel(
        block_out_channels=(8, 8, 16), layers_per_block=1, sample_size=8, in_channels=7,
        out_channels=4, cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4,
        use_linear_projection=True, only_cross_attention=(True, True, False),
        num_class_embeds=100,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
    StableDiffusionUpscalePipeline(
        unet=unet, vae=_vae(3, scaling_factor=0.08333), text_encoder=_text_encoder(len(words)),
        tokenizer=words,
        low_res_scheduler=DDPMScheduler(), scheduler=DDIMScheduler(prediction_type="v_prediction"),
        max_noise_level=350).save_pretrained(folder)
    return folder


def catalog(path: Path, models: dict[str, dict[str, Any]]) -> str:
    """A catalog file naming these models (name -> entry without its name)."""
    path.write_text(json.dumps({"models": [{"name": n, **e} for n, e in models.items()]}))
    return str(path)
