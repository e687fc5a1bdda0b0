"""Loading a model's `Components` (framepack.model_spec): the bundled demo, a model folder, or
the released HunyuanVideo checkpoints (framepack.hunyuan.components, imported only when asked
for: it needs diffusers and transformers).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from framepack.errors import UserError
from framepack.model_spec import BUILTIN_MODELS, MODES, Components, LoadOptions, ModelSpec

__all__ = [
    "BUILTIN_MODELS",
    "MODES",
    "Components",
    "LoadOptions",
    "ModelSpec",
    "load_components",
    "spec_from_meta",
]
from framepack.lora import apply_loras, check_lora_args
from framepack.model_bundle import demo_path, load_bundle

log = logging.getLogger(__name__)


def load_components(model: str, options: LoadOptions | None = None) -> Components:
    """Load `demo`, `hunyuan-inverted`, `hunyuan-f1`, or a model folder (with framepack.json)."""
    options = options or LoadOptions()
    check_lora_args(options.loras)  # before anything loads
    if model not in ("hunyuan-inverted", "hunyuan-f1"):
        flags = (
            ("--teacache", options.teacache > 0),
            ("--low-vram", options.low_vram),
            ("--vram-gb", options.vram_gb is not None),
            ("--pinned-gb", options.pinned_gb is not None),
        )
        for flag, used in flags:
            if used:
                raise UserError(
                    f"{flag} applies to the released models (hunyuan-inverted, hunyuan-f1), not to "
                    f"{model}; drop it"
                )
    if model == "demo":
        path = demo_path()
        if not (path / "framepack.json").is_file():
            raise UserError(
                f"the bundled demo model is missing from {path}; reinstall framepack or pass --model PATH"
            )
        return _load_bundle(path, options)
    if model in ("hunyuan-inverted", "hunyuan-f1"):
        from framepack.hunyuan.components import load_hunyuan

        return load_hunyuan(model, options)
    path = Path(model)
    if path.is_dir() and (path / "framepack.json").is_file():
        return _load_bundle(path, options)
    if path.exists():
        raise UserError(
            f"--model {model}: not a FramePack model folder (no framepack.json); for the released "
            "checkpoints use --model hunyuan-inverted|hunyuan-f1 --model-dir DIR"
        )
    raise UserError(f"unknown model {model!r}; use one of {', '.join(BUILTIN_MODELS)} or a model folder")


def _load_bundle(path: Path, options: LoadOptions) -> Components:
    device = options.torch_device()
    dtype = {"auto": torch.float32, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
        options.dtype
    ]
    bundle = load_bundle(path, device=device, dtype=dtype)
    apply_loras(bundle.transformer, options.loras)
    return Components(
        spec=spec_from_meta(bundle.meta, path),
        transformer=bundle.transformer,
        codec=bundle.codec,
        prompt_encoder=bundle.text_encoder,
        image_encoder=None,
        device=device,
        dtype=dtype,
        source=str(path),
        history_codebook=bundle.codebook,
    )


def spec_from_meta(meta: Any, path: Path) -> ModelSpec:
    """A ModelSpec from a bundle's `BundleMeta` (framepack/model_bundle.py).

    The start anchor's RoPE gap is capped at the largest frame index seen in training
    (`max_latent_index`; older bundles: the training window length), the general-mode
    counterpart of the released layout's capped padding: past it, the anchor keeps its
    distance to the section instead of drifting out of the trained range.
    """
    largest = getattr(meta, "max_latent_index", None)
    if largest is None:
        largest = meta.training.get("config", {}).get("data", {}).get("clip_latents")
    # anchor at (start - gap), section frames up to start + window - 1: span <= largest index
    gap = None if largest is None else max(1, int(largest) - meta.window + 1)
    example = path / "example.png"
    return ModelSpec(
        name=str(meta.model_card.get("name", path.name)),
        fps=round(meta.fps),
        window=meta.window,
        mode="general",
        schedule=meta.schedule,
        plan=meta.default_plan,
        steps=meta.steps,
        sampler=meta.sampler,
        shift=meta.shift,
        guidance=meta.guidance,
        cfg=float(meta.cfg_scale),
        size=(meta.height, meta.width),
        max_anchor_gap=gap,
        prediction=getattr(meta, "prediction", "velocity"),
        example_image=str(example) if example.is_file() else None,
        example_prompt=meta.default_prompt,
        layouts=tuple(meta.layouts) or None,
    )
