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

import contextlib
import dataclasses
import functools
import logging
import sys
from collections.abc import Callable
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
    wants_low_vram = (options.low_vram or options.vram_gb is not None) and device.type == "cuda"
    home = torch.device("cpu") if wants_low_vram else device  # where the encoders and VAE load

    transformer = _load_transformer(paths.transformer, transformer_dtype)
    apply_loras(transformer, options.loras)
    prompt_encoder = HunyuanPromptEncoder.from_dir(paths.hunyuan, device=home, dtype=encoder_dtype)
    image_encoder = SiglipImageEncoder.from_dir(paths.redux, device=home, dtype=encoder_dtype)
    vae = HunyuanVideoVAE.from_dir(paths.hunyuan, device=home, dtype=encoder_dtype)
    plan, sizes, pin_limit = None, None, pinned_bytes(options)
    if device.type == "cuda":
        from framepack.hunyuan.budget import job_sizes, plan_memory

        sizes = job_sizes(
            prompt_encoder.text_encoder, prompt_encoder.text_encoder_2, image_encoder.image_encoder,
            vae.vae, transformer, largest_latent(spec.bucket), spec.window,
        )  # fmt: skip
        plan = plan_memory(sizes, low_vram=wants_low_vram, budget=options.vram_budget(), pin_limit=pin_limit)
    if plan is not None and plan.low_vram:
        prompt, image_fn, codec = install_low_vram(
            transformer, prompt_encoder, image_encoder, vae, device, plan.keep, pin_limit
        )
    else:
        for part in (transformer, prompt_encoder, image_encoder.image_encoder, vae.vae):
            part.to(device)
        prompt, image_fn, codec = prompt_encoder, ImageEncoderFn(image_encoder), vae

    hooks = RunHooks(transformer, spec, plan, sizes, options)
    return Components(
        spec=spec,
        transformer=transformer,
        codec=codec,
        prompt_encoder=prompt,
        image_encoder=image_fn,
        device=device,
        dtype=transformer_dtype,
        source=str(paths.transformer),
        on_job_start=hooks.job_start,
        on_section_start=hooks.section_start,
        choose_size=functools.partial(nearest_bucket, resolution=spec.bucket),
    )


def pinned_bytes(options: LoadOptions) -> int:
    """Host memory low-VRAM mode may pin (`--pinned-gb`, else `memory.default_pin_limit()`)."""
    from framepack.hunyuan.memory import default_pin_limit

    return default_pin_limit() if options.pinned_gb is None else int(options.pinned_gb * 2**30)


def largest_latent(bucket: int) -> tuple[int, int]:
    """The latent (h, w) of the largest-area bucket at `bucket` (what a plan must fit)."""
    from framepack.hunyuan.buckets import buckets

    h, w = max(buckets(bucket), key=lambda hw: hw[0] * hw[1])
    return h // 8, w // 8


def install_low_vram(
    transformer: nn.Module,
    prompt_encoder: Any,
    image_encoder: Any,
    vae: Any,
    device: torch.device,
    keep: int,
    pin_limit: int,
) -> tuple[Any, Any, Any]:
    """Low-VRAM mode: the transformer's first `keep` blocks and small parts on `device`, the
    other blocks streamed; LLaMA, CLIP-L and SigLIP streamed layer by layer; the VAE on `device`
    only while it runs, tiled. Returns the pipeline's (prompt encoder, image encoder, codec).
    """
    from framepack.hunyuan.memory import Ledger, stream_blocks
    from framepack.hunyuan.offload import StreamedEncoder

    ledger = Ledger()
    stream_blocks(transformer, device, keep=keep, pin_limit=pin_limit, ledger=ledger)
    vae.set_tiling(True)
    vae.set_slicing(True)
    prompt = OffloadedPromptEncoder(
        prompt_encoder,
        [StreamedEncoder(m, device, ledger) for m in prompt_encoder.modules()],
        device,
    )
    image = ImageEncoderFn(
        image_encoder, StreamedEncoder(image_encoder.image_encoder, device, ledger), device
    )
    return prompt, image, OffloadedCodec(vae, device, ledger)


def _load_transformer(directory: Path, dtype: torch.dtype) -> nn.Module:
    from framepack.models import PackedTransformer

    try:
        return PackedTransformer.from_pretrained(directory, dtype=dtype, device="cpu")
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"could not load the FramePack transformer from {directory}: {err}") from None


# ----------------------------------------------------------------------------- run hooks


class RunHooks:
    """What the pipeline calls at the start of a job and of each section (TeaCache, VRAM plan)."""

    def __init__(
        self, transformer: nn.Module, spec: ModelSpec, plan: Any, sizes: Any, options: LoadOptions
    ) -> None:
        self.transformer = transformer
        self.spec = spec
        self.plan = plan  # framepack.hunyuan.budget.MemoryPlan (CUDA), or None
        self.sizes = sizes  # framepack.hunyuan.budget.JobSizes (CUDA), or None
        self.teacache_threshold = options.teacache
        self.teacache: Any = None  # framepack.hunyuan.teacache.TeaCache once installed

    def job_start(self, latent_hw: tuple[int, int], steps: int) -> None:
        """Print the VRAM plan for this job's size (CUDA) and install TeaCache for `steps` steps."""
        if self.plan is not None:
            from framepack.hunyuan.budget import phases

            sizes = dataclasses.replace(self.sizes, latent_hw=latent_hw)
            plan = dataclasses.replace(self.plan, phases=phases(sizes, self.plan.low_vram, self.plan.keep))
            print(plan.summary(), file=sys.stderr)
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


class ImageEncoderFn:
    """The pipeline's image-encoder callable: (B, 3, H, W) in [-1, 1] -> (B, N, 1152) features.

    With `streamed` (low-VRAM mode), SigLIP's layers stream to `device` one at a time.
    """

    def __init__(self, encoder: Any, streamed: Any = None, device: torch.device | None = None) -> None:
        self.encoder = encoder  # framepack.hunyuan.image.SiglipImageEncoder
        self.streamed = streamed  # framepack.hunyuan.offload.StreamedEncoder
        if streamed is not None:
            encoder.execution_device = device

    def __call__(self, images: Tensor) -> Tensor:
        if self.streamed is None:
            return self.encoder.encode(images)
        with self.streamed.visit():
            return self.encoder.encode(images)


class OffloadedPromptEncoder:
    """The prompt encoder with LLaMA and CLIP-L streamed to `device` layer by layer."""

    def __init__(self, encoder: Any, streamed: list[Any], device: torch.device) -> None:
        self.encoder = encoder
        self.streamed = streamed  # framepack.hunyuan.offload.StreamedEncoder, one per model
        encoder.execution_device = device

    def encode(self, prompts: list[str]) -> Any:
        with contextlib.ExitStack() as stack:
            for streamed in self.streamed:
                stack.enter_context(streamed.visit())
            return self.encoder.encode(prompts)


class OffloadedCodec:
    """The VAE `Codec`, resting on the CPU and copied to `device` for each encode / decode."""

    crossfade_decode = True  # causal in time: decoded window by window (framepack.pipeline)

    def __init__(self, vae: Any, device: torch.device, ledger: Any = None) -> None:
        self.vae = vae
        self.device = device
        self.ledger = ledger  # framepack.hunyuan.memory.Ledger
        self.latent_channels = vae.latent_channels
        self.time_factor = vae.time_factor
        self.space_factor = vae.space_factor

    def _visit(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        from framepack.hunyuan.memory import on_device

        with on_device([self.vae.vae], self.device, ledger=self.ledger):
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
