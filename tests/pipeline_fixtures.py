"""Tiny random components for pipeline tests: a packed transformer, the pixel codec, a vocab encoder."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from PIL import Image

from framepack.codecs.pixel import PixelCodec
from framepack.components import Components, ModelSpec
from framepack.models.config import PRESETS
from framepack.models.transformer import PackedTransformer
from framepack.text.vocab import VocabEncoder, VocabEncoderConfig


def tiny_components(
    *, mode: str = "general", plan: str = "inverted", window: int = 2, size=(16, 16)
) -> Components:
    codec = PixelCodec(space_factor=4, time_factor=4)
    text = VocabEncoder.from_captions(
        ["the camera pans right", "the camera holds still"],
        VocabEncoderConfig(width=32, pooled_width=16),
        seed=0,
    ).eval()
    config = replace(
        PRESETS["tiny"],
        in_channels=codec.latent_channels,
        out_channels=codec.latent_channels,
        has_image_proj=False,
        guidance_embeds=False,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = PackedTransformer(config).eval()
    spec = ModelSpec(
        name="tiny-test",
        fps=8,
        window=window,
        mode=mode,
        schedule="released-f1",
        plan=plan,
        steps=3,
        shift=3.0,
        size=size,
        example_prompt="the camera pans right",
    )
    return Components(spec=spec, transformer=model, codec=codec, prompt_encoder=text)


def write_image(path, size=(40, 40), seed=0) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return str(path)
