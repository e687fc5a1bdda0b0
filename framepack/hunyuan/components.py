"""Load the released FramePack checkpoints into `framepack.components.Components`.

`load_hunyuan("hunyuan-inverted" | "hunyuan-f1", LoadOptions)` finds the three released
repositories offline (`framepack.hunyuan.paths.locate`), loads the packed transformer
(`lllyasviel/FramePackI2V_HY` or `lllyasviel/FramePack_F1_I2V_HY_20250503`), the HunyuanVideo
VAE and LLaMA + CLIP-L prompt encoder, and the SigLIP image encoder, and applies the memory
options: LoRA merging, low-VRAM block streaming (encoders and VAE on the GPU only while used),
TeaCache (reset at each section) and the VRAM estimate printed before a run on CUDA.

Dtypes (`LoadOptions.dtype`): "auto" is the released precision on CUDA (transformer bf16, VAE and
encoders fp16) and float32 on the CPU (half-precision CPU kernels are slow or missing);
"fp32" is float32 everywhere; "bf16" / "fp16" set the transformer's dtype, encoders fp16.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from framepack.errors import UserError
from framepack.hunyuan.buckets import nearest_bucket
from framepack.model_spec import Components, LoadOptions, ModelSpec

log = logging.getLogger(__name__)

DEFAULT_BUCKET = 640
RELEASED_PLANS = {"hunyuan-inverted": "inverted", "hunyuan-f1": "forward"}


def released_spec(model: str, bucket: int = DEFAULT_BUCKET) -> ModelSpec:
    """The official demo's defaults for a released checkpoint (SPEC sec. 5).

    Window 9 latents (33 frames), 30 fps, 25 steps, resolution-dependent shift capped at 7
    (`shift=None`), distilled guidance 10, resolution buckets around `bucket`^2 pixels.
    """
    if model not in RELEASED_PLANS:
        raise UserError(f"unknown released model {model!r}; choose one of {', '.join(RELEASED_PLANS)}")
    return ModelSpec(
        name=model,
        fps=30,
        window=9,
        mode="released",
        plan=RELEASED_PLANS[model],
        steps=25,
        shift=None,
        guidance=10.0,
        size=None,
        bucket=bucket,
    )


def dtypes(option: str, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(transformer dtype, VAE/encoder dtype) for `LoadOptions.dtype` on `device`."""
    if option == "fp32" or (option == "auto" and device.type == "cpu"):
        return torch.float32, torch.float32
    transformer = {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16}.get(option)
    if transformer is None:
        raise UserError(f"--dtype {option!r} is not a dtype; use auto, fp32, fp16 or bf16")
    return transformer, torch.float16


def load_hunyuan(model: str, options: LoadOptions) -> Components:
    """Load a released FramePack model (`hunyuan-inverted` or `hunyuan-f1`) for generation.

    Raises UserError when a part is missing (naming the repository, the files and the folders
    searched), when a LoRA does not fit, or when the device is unavailable.
    """
    from framepack.hunyuan.image import SiglipImageEncoder
    from framepack.hunyuan.paths import locate
    from framepack.hunyuan.text import HunyuanPromptEncoder
    from framepack.hunyuan.vae import HunyuanVideoVAE
    from framepack.lora import apply_loras

    spec = released_spec(model, options.bucket or DEFAULT_BUCKET)
    device = options.torch_device()
    paths = locate(model, options.model_dir)
    transformer_dtype, encoder_dtype = dtypes(options.dtype, device)
    low_vram = options.low_vram and device.type == "cuda"
    home = torch.device("cpu") if low_vram else device  # where the encoders and VAE rest

    transformer = _load_transformer(paths.transformer, transformer_dtype)
    apply_loras(transformer, options.loras)
    if low_vram:
        from framepack.hunyuan.memory import stream_blocks

        stream_blocks(transformer, device)
    else:
        transformer.to(device)

    prompt_encoder = HunyuanPromptEncoder.from_dir(paths.hunyuan, device=home, dtype=encoder_dtype)
    image_encoder = SiglipImageEncoder.from_dir(paths.redux, device=home, dtype=encoder_dtype)
    vae = HunyuanVideoVAE.from_dir(
        paths.hunyuan, device=home, dtype=encoder_dtype, tiling=low_vram, slicing=low_vram
    )
    codec: Any = vae
    prompt: Any = prompt_encoder
    if low_vram:
        codec = OffloadedCodec(vae, device)
        prompt = OffloadedPromptEncoder(prompt_encoder, device)

    hooks = RunHooks(transformer, spec, transformer_dtype, device, options)
    return Components(
        spec=spec,
        transformer=transformer,
        codec=codec,
        prompt_encoder=prompt,
        image_encoder=ImageEncoderFn(image_encoder, device if low_vram else None),
        device=device,
        dtype=transformer_dtype,
        source=str(paths.transformer),
        on_job_start=hooks.job_start,
        on_section_start=hooks.section_start,
        choose_size=functools.partial(nearest_bucket, resolution=spec.bucket),
    )


def _load_transformer(directory: Path, dtype: torch.dtype) -> nn.Module:
    from framepack.models import PackedTransformer

    try:
        return PackedTransformer.from_pretrained(directory, dtype=dtype, device="cpu")
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"could not load the FramePack transformer from {directory}: {err}") from None


# ----------------------------------------------------------------------------- run hooks


class RunHooks:
    """What the pipeline calls at the start of a job and of each section (TeaCache, VRAM line)."""

    def __init__(
        self,
        transformer: nn.Module,
        spec: ModelSpec,
        dtype: torch.dtype,
        device: torch.device,
        options: LoadOptions,
    ) -> None:
        self.transformer = transformer
        self.spec = spec
        self.dtype = dtype
        self.device = device
        self.low_vram = options.low_vram and device.type == "cuda"
        self.teacache_threshold = options.teacache
        self.teacache: Any = None  # framepack.hunyuan.teacache.TeaCache once installed

    def job_start(self, latent_hw: tuple[int, int], steps: int) -> None:
        """Print the VRAM estimate (CUDA) and install TeaCache for `steps` steps per section."""
        if self.device.type == "cuda":
            from framepack.hunyuan.memory import estimate_vram, released_history_tokens

            estimate = estimate_vram(
                self.transformer.config,
                latent_hw,
                self.spec.window,
                released_history_tokens(latent_hw),
                self.dtype,
                "low-vram" if self.low_vram else "normal",
            )
            print(estimate, file=sys.stderr)
        if self.teacache_threshold > 0:
            from framepack.hunyuan.teacache import TeaCache, install_teacache

            if self.teacache is None:
                self.teacache = TeaCache(self.teacache_threshold, steps)
                install_teacache(self.transformer, self.teacache)
            self.teacache.num_steps = steps

    def section_start(self) -> None:
        """A new section: TeaCache forgets the previous section's inputs and residual."""
        if self.teacache is not None:
            self.teacache.reset()


# ----------------------------------------------------------------------------- offloading


@dataclass
class ImageEncoderFn:
    """The pipeline's image-encoder callable: (B, 3, H, W) in [-1, 1] -> (B, N, 1152) features.

    With `device`, the encoder is moved there for the call and back to the CPU afterwards.
    """

    encoder: Any  # framepack.hunyuan.image.SiglipImageEncoder
    device: torch.device | None = None

    def __call__(self, images: Tensor) -> Tensor:
        if self.device is None:
            return self.encoder.encode(images)
        from framepack.hunyuan.memory import on_device

        with on_device(self.encoder.modules(), self.device):
            return self.encoder.encode(images)


class OffloadedPromptEncoder:
    """A prompt encoder that lives on the CPU and visits `device` for each `encode`."""

    def __init__(self, encoder: Any, device: torch.device) -> None:
        self.encoder = encoder
        self.device = device

    def encode(self, prompts: list[str]) -> Any:
        from framepack.hunyuan.memory import on_device

        with on_device(self.encoder.modules(), self.device):
            return self.encoder.encode(prompts)


class OffloadedCodec:
    """The VAE `Codec`, resting on the CPU and moved to `device` for each encode / decode."""

    crossfade_decode = True  # causal in time: decoded window by window (framepack.pipeline)

    def __init__(self, vae: Any, device: torch.device) -> None:
        self.vae = vae
        self.device = device
        self.latent_channels = vae.latent_channels
        self.time_factor = vae.time_factor
        self.space_factor = vae.space_factor

    def _visit(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        from framepack.hunyuan.memory import on_device

        with on_device([self.vae.vae], self.device):
            return fn(x)

    def encode(self, pixels: Tensor) -> Tensor:
        return self._visit(self.vae.encode, pixels)

    def decode(self, latents: Tensor) -> Tensor:
        return self._visit(self.vae.decode, latents)

    def num_frames(self, latent_frames: int) -> int:
        return self.vae.num_frames(latent_frames)

    def num_latents(self, frames: int) -> int:
        return self.vae.num_latents(frames)

    def config(self) -> dict[str, Any]:
        return self.vae.config()
