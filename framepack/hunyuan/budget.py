"""GPU memory of every phase of a released-model job, and a plan that fits a budget.

A job has four phases, each with its own peak on the GPU:

- prompt: LLaMA (7.5 B) and CLIP-L (123 M) encode the prompt;
- image: SigLIP (428 M) encodes the start image and the VAE (246 M) encodes it to a latent;
- sampling: the transformer (12.87 B) runs 25 steps per section;
- decode: the VAE decodes each section's window.

In low-VRAM mode the encoders stream one layer at a time (their token embedding is looked up on
the host), the VAE visits whole with tiling, and the transformer keeps its small parts plus the
first `keep` blocks on the GPU for the whole job and streams the others. `plan_memory` picks the
largest `keep` whose every phase fits the budget, or refuses when none does.

Each phase's peak is weights on the GPU + activations + the transformer's resident part (held
through the whole job) + a fixed runtime overhead (CUDA context, allocator slack). Parameter
counts are exact (the released configs below, built on the meta device, or the loaded models);
activations are conservative counts of live tensors, checked as upper bounds on tiny models
(tests/test_low_vram.py). GPU measurements: docs/hunyuan.md section 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from framepack.errors import UserError
from framepack.hunyuan.memory import (
    ACTIVATION_WIDTHS,
    BLOCK_LISTS,
    RUNTIME_OVERHEAD,
    released_history_tokens,
    tensor_bytes,
)

GIB = 2**30
PROMPT_TOKENS = 256 + 95  # LLaMA runs on max_length + the template's 95 tokens
CLIP_TOKENS = 77
STATE_WIDTHS = 6  # live (tokens, width) tensors in an encoder layer: input, norm, q, k, v, output
MLP_WIDTHS = 3  # live (tokens, intermediate) tensors: gate, up, activation
VAE_LIVE = 8  # live full-resolution feature maps in a VAE resnet block (input, norms, convs, pads)
PHASES = ("prompt", "image", "sampling", "decode")
STREAM_BUFFERS = 2  # streamed blocks on the GPU at once, counted with allocator slack

# The released encoders' settings (public config.json values of hunyuanvideo-community/HunyuanVideo
# text_encoder / text_encoder_2 / vae and lllyasviel/flux_redux_bfl image_encoder).
RELEASED_LLAMA = dict(
    hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, vocab_size=128320, max_position_embeddings=8192,
)  # fmt: skip
RELEASED_CLIP = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    vocab_size=49408, max_position_embeddings=77, projection_dim=768,
)  # fmt: skip
RELEASED_SIGLIP = dict(
    hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
    image_size=384, patch_size=14,
)  # fmt: skip
RELEASED_VAE = dict(latent_channels=16, block_out_channels=(128, 256, 512, 512), layers_per_block=2)


# ----------------------------------------------------------------------------- sizes


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The repeated layers of a LLaMA, CLIP text or SigLIP vision model (what streams)."""
    for path in ("layers", "text_model.encoder.layers", "vision_model.encoder.layers", "encoder.layers"):
        found: Any = model
        for name in path.split("."):
            found = getattr(found, name, None)
        if isinstance(found, nn.ModuleList):
            return found
    raise ValueError(f"{type(model).__name__} has no encoder layer list to stream")


def host_lookup(model: nn.Module) -> nn.Embedding | None:
    """The token embedding, looked up on the host in low-VRAM mode (LLaMA's is 1 GiB in fp16)."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return embedding if isinstance(embedding, nn.Embedding) else None


@dataclass(frozen=True)
class Footprint:
    """Weight bytes of one encoder: all, its streamed layers, the largest layer, the host lookup."""

    total: int
    layers: int = 0
    largest_layer: int = 0
    lookup: int = 0

    @property
    def streamed(self) -> int:
        """On the GPU at once when streamed: the rest (visiting) plus one layer."""
        return self.total - self.layers - self.lookup + self.largest_layer


def footprint(model: nn.Module, stream: bool = True) -> Footprint:
    """The `Footprint` of a model (loaded, or built on the meta device)."""
    total = tensor_bytes(model)
    if not stream:
        return Footprint(total)
    layers = [tensor_bytes(layer) for layer in encoder_layers(model)]
    lookup = host_lookup(model)
    return Footprint(total, sum(layers), max(layers), tensor_bytes(lookup) if lookup is not None else 0)


@dataclass(frozen=True)
class TransformerSize:
    """Weight bytes of the transformer: outside the blocks, and each block in call order."""

    other: int
    blocks: tuple[int, ...]

    @property
    def total(self) -> int:
        return self.other + sum(self.blocks)

    def resident(self, keep: int) -> int:
        """Bytes on the GPU for the whole job when the first `keep` blocks stay there."""
        return self.other + sum(self.blocks[:keep])

    def streamed(self, keep: int) -> int:
        """Bytes of streamed blocks on the GPU at once (the largest, `STREAM_BUFFERS` times)."""
        rest = self.blocks[keep:]
        return STREAM_BUFFERS * max(rest) if rest else 0


def transformer_size(model: nn.Module) -> TransformerSize:
    blocks = tuple(tensor_bytes(b) for name in BLOCK_LISTS for b in getattr(model, name))
    return TransformerSize(tensor_bytes(model) - sum(blocks), blocks)


# ----------------------------------------------------------------------------- activations


def encoder_activations(config: Any, tokens: int, element: int, kept_states: int = 1) -> int:
    """Live activation bytes of one transformer-encoder call at batch 1.

    `kept_states` hidden states of (tokens, width) are kept (LLaMA keeps every layer's: the
    prompt uses hidden_states[-3]); one layer's working set; float32 attention scores, twice.
    """
    width, inner, heads = config.hidden_size, config.intermediate_size, config.num_attention_heads
    states = kept_states * tokens * width * element
    working = tokens * (STATE_WIDTHS * width + MLP_WIDTHS * inner) * element
    return states + working + 2 * heads * tokens * tokens * 4


def vae_activations(vae: Any, frames: int, height: int, width: int, element: int, tiled: bool) -> int:
    """Live activation bytes of a VAE encode or decode of `frames` pixel frames of height x width.

    The peak is at full resolution in the first (or last) block: `VAE_LIVE` maps of the
    full-resolution channel count over one tile (17 frames; 256 x 256 pixels with spatial
    tiling), plus the pixels out, twice (the tiles and their blend).
    """
    channels = int(vae.config.block_out_channels[0])
    tile_h, tile_w = height, width
    if tiled:
        tile_h = min(height, int(getattr(vae, "tile_sample_min_height", 256)))
        tile_w = min(width, int(getattr(vae, "tile_sample_min_width", 256)))
    tile_t = frames  # diffusers decodes 16 + 1 frames at a time whenever framewise decoding is on
    if getattr(vae, "use_framewise_decoding", True):
        tile_t = min(frames, int(getattr(vae, "tile_sample_min_num_frames", 16)) + 1)
    maps = VAE_LIVE * channels * tile_t * tile_h * tile_w * element
    return maps + 2 * 3 * frames * height * width * element


def transformer_activations(config: Any, latent_hw: tuple[int, int], window: int, element: int) -> int:
    """Live activation bytes of one transformer call (`ACTIVATION_WIDTHS` (tokens, D) tensors)."""
    p = config.patch_size
    noisy = window * math.ceil(latent_hw[0] / p) * math.ceil(latent_hw[1] / p)
    tokens = noisy + released_history_tokens(latent_hw) + 256 + 729
    return tokens * config.inner_dim * element * ACTIVATION_WIDTHS


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Phase:
    """Peak GPU bytes of one phase: weights it brings, activations, what rests there for the job
    (the transformer's resident part; in normal mode every model)."""

    name: str
    weights: int
    activations: int
    resident: int
    overhead: int = int(RUNTIME_OVERHEAD)

    @property
    def total(self) -> int:
        return self.weights + self.activations + self.resident + self.overhead

    def __str__(self) -> str:
        g = GIB
        return (
            f"{self.name} {self.total / g:.1f} GiB (weights {self.weights / g:.2f} + activations "
            f"{self.activations / g:.2f} + resident {self.resident / g:.2f} + overhead {self.overhead / g:.2f})"
        )


@dataclass(frozen=True)
class MemoryPlan:
    """Where the weights live in a job, and the peak of every phase."""

    low_vram: bool
    keep: int  # transformer blocks on the GPU for the whole job (all of them in normal mode)
    blocks: int
    pinned: int  # bytes of pinned host memory for resting blocks
    phases: tuple[Phase, ...] = field(default_factory=tuple)
    budget: int | None = None

    @property
    def peak(self) -> Phase:
        return max(self.phases, key=lambda p: p.total)

    def phase(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)

    def summary(self) -> str:
        """One line: mode, budget, each phase's peak, blocks kept, pinned memory."""
        mode = "low-VRAM" if self.low_vram else "normal"
        budget = f", budget {self.budget / GIB:.1f} GiB" if self.budget is not None else ""
        phases = ", ".join(f"{p.name} {p.total / GIB:.1f}" for p in self.phases)
        kept = f"{self.keep} of {self.blocks} transformer blocks kept on the GPU, the rest streamed"
        if not self.low_vram:
            kept = "all weights on the GPU"
        return (
            f"estimated VRAM ({mode}{budget}): peak {self.peak.total / GIB:.1f} GiB ({self.peak.name}); "
            f"per phase {phases} GiB; {kept}; pinned host memory {self.pinned / GIB:.1f} GiB"
        )

    def __str__(self) -> str:
        return "\n".join([self.summary(), *(f"  {p}" for p in self.phases)])


@dataclass(frozen=True)
class JobSizes:
    """Everything the plan needs: weight sizes, model configs, the job's shape, dtypes."""

    llama: Footprint
    clip: Footprint
    siglip: Footprint
    vae: int
    transformer: TransformerSize
    llama_config: Any
    clip_config: Any
    siglip_config: Any
    vae_model: Any  # for its channel counts and tile sizes (config + tile attributes)
    transformer_config: Any
    encoder_element: int = 2
    transformer_element: int = 2
    latent_hw: tuple[int, int] = (80, 76)
    window: int = 9


def phases(sizes: JobSizes, low_vram: bool, keep: int) -> tuple[Phase, ...]:
    """The four phases' peaks with the first `keep` blocks resident (all blocks when not low_vram)."""
    s, e = sizes, sizes.encoder_element
    if low_vram:
        resident = s.transformer.resident(keep)
        weights = (
            s.llama.streamed + s.clip.streamed,
            s.siglip.streamed + s.vae,
            s.transformer.streamed(keep),
            s.vae,
        )
    else:  # every model on the GPU for the whole job
        resident = s.transformer.total + s.llama.total + s.clip.total + s.siglip.total + s.vae
        weights = (0, 0, 0, 0)
    h, w = (8 * s.latent_hw[0], 8 * s.latent_hw[1])
    siglip_tokens = (s.siglip_config.image_size // s.siglip_config.patch_size) ** 2
    prompt_acts = encoder_activations(s.llama_config, PROMPT_TOKENS, e, s.llama_config.num_hidden_layers + 1)
    image_acts = max(
        encoder_activations(s.siglip_config, siglip_tokens, e),
        vae_activations(s.vae_model, 1, h, w, e, tiled=low_vram),
    )
    decode_frames = 4 * (2 * s.window + 1) - 3
    sampling_acts = transformer_activations(
        s.transformer_config, s.latent_hw, s.window, s.transformer_element
    )
    decode_acts = vae_activations(s.vae_model, decode_frames, h, w, e, tiled=low_vram)
    activations = (
        prompt_acts + encoder_activations(s.clip_config, CLIP_TOKENS, e),
        image_acts,
        sampling_acts,
        decode_acts,
    )
    return tuple(Phase(n, wt, a, resident) for n, wt, a in zip(PHASES, weights, activations, strict=True))


def plan_memory(
    sizes: JobSizes,
    *,
    low_vram: bool,
    budget: int | None = None,
    pin_limit: int = 0,
) -> MemoryPlan:
    """The plan for a job: normal mode, or low-VRAM with the most blocks kept that fit `budget`.

    With a budget that the normal mode fits, nothing streams. Raises UserError when even
    streaming every block does not fit.
    """
    blocks = len(sizes.transformer.blocks)
    normal = MemoryPlan(False, blocks, blocks, 0, phases(sizes, False, blocks), budget)
    if (budget is None and not low_vram) or (budget is not None and normal.peak.total <= budget):
        return normal
    # No budget: every block streamed (the official demo's choice). A budget: the most kept that fit.
    for keep in range(blocks if budget is not None else 0, -1, -1):
        plan = MemoryPlan(True, keep, blocks, 0, phases(sizes, True, keep), budget)
        if budget is None or plan.peak.total <= budget:
            return replace(plan, pinned=_pinned(sizes.transformer.blocks[keep:], pin_limit))
    raise UserError(
        f"--vram-gb {budget / GIB:g}: even streaming every block needs {plan.peak.total / GIB:.1f} GiB "
        f"({plan.peak.name}) at latents {sizes.latent_hw[0]}x{sizes.latent_hw[1]}; raise --vram-gb or pick "
        f"a smaller --bucket"
    )


def _pinned(blocks: tuple[int, ...], limit: int) -> int:
    """Bytes pinned when blocks are pinned in order until the next would pass `limit`."""
    pinned = 0
    for nbytes in blocks:
        if pinned + nbytes > limit:
            break
        pinned += nbytes
    return pinned


# ----------------------------------------------------------------------------- released sizes


def released_sizes(
    latent_hw: tuple[int, int] = (80, 76),
    window: int = 9,
    encoder_dtype: torch.dtype = torch.float16,
    transformer_dtype: torch.dtype = torch.bfloat16,
) -> JobSizes:
    """`JobSizes` of the released models, built on the meta device (no weights needed)."""
    from diffusers import AutoencoderKLHunyuanVideo
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        LlamaConfig,
        LlamaModel,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    from framepack.models import PRESETS, PackedTransformer

    default = torch.get_default_dtype()
    try:
        with torch.device("meta"):
            torch.set_default_dtype(encoder_dtype)
            llama = LlamaModel(LlamaConfig(**RELEASED_LLAMA))
            clip = CLIPTextModel(CLIPTextConfig(**RELEASED_CLIP))
            siglip = SiglipVisionModel(SiglipVisionConfig(**RELEASED_SIGLIP))
            vae = AutoencoderKLHunyuanVideo(**RELEASED_VAE)
            torch.set_default_dtype(transformer_dtype)
            transformer = PackedTransformer(PRESETS["hunyuan-13b"])
    finally:
        torch.set_default_dtype(default)
    return job_sizes(llama, clip, siglip, vae, transformer, latent_hw, window)


def job_sizes(
    llama: nn.Module,
    clip: nn.Module,
    siglip: nn.Module,
    vae: nn.Module,
    transformer: nn.Module,
    latent_hw: tuple[int, int],
    window: int,
) -> JobSizes:
    """`JobSizes` of loaded (or meta) models for a job at `latent_hw` with `window` latents."""
    return JobSizes(
        llama=footprint(llama),
        clip=footprint(clip),
        siglip=footprint(siglip),
        vae=tensor_bytes(vae),
        transformer=transformer_size(transformer),
        llama_config=llama.config,
        clip_config=clip.config,
        siglip_config=siglip.config,
        vae_model=vae,
        transformer_config=transformer.config,
        encoder_element=next(llama.parameters()).element_size(),
        transformer_element=next(transformer.parameters()).element_size(),
        latent_hw=latent_hw,
        window=window,
    )
