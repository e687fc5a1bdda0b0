"""GPU memory of one LoRA training step, computed from parameter and token counts.

Per GPU (DDP replicates everything; FSDP2 divides the base weights by the process count):

- base weights: every parameter in bf16 (2 bytes); with low-VRAM streaming everything outside
  the blocks plus `resident_blocks` of the largest block; under FSDP2 split over the
  processes plus two gathered blocks (the running one and the prefetched one);
- adapters: float32 weight, gradient and two AdamW moments (16 bytes per adapter parameter);
- activations: with gradient checkpointing each of the 60 blocks keeps its input (tokens x width
  x 2 bytes) and one block at a time is recomputed and differentiated (`BACKWARD_WIDTHS`
  tensors of tokens x width); without it every block keeps `BACKWARD_WIDTHS` such tensors;
- a fixed runtime overhead (CUDA context, allocator slack), as in framepack.hunyuan.memory.

Tokens are those of one released section: the window's noisy tokens, the packed context
(1x start + 1, 2x 2, 4x 16 frames) and text + image tokens (256 + 729 at most).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import torch

from framepack.hunyuan.memory import (
    ACTIVATION_WIDTHS,
    RUNTIME_OVERHEAD,
    parameter_counts,
    released_history_tokens,
)
from framepack.lora_train.adapters import TARGETS, LoraSpec
from framepack.models.config import TransformerConfig

# A block's forward keeps ACTIVATION_WIDTHS tensors of tokens x width at its peak; its backward
# holds about as many gradients of them at once.
BACKWARD_WIDTHS = 2 * ACTIVATION_WIDTHS
ADAPTER_BYTES = 16  # float32 weight + gradient + AdamW exp_avg + exp_avg_sq
GIB = 2**30


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes on one GPU during a training step."""

    weights: int
    adapters: int
    activations: int
    overhead: int
    tokens: int

    @property
    def total(self) -> int:
        return self.weights + self.adapters + self.activations + self.overhead

    def __str__(self) -> str:
        return (
            f"{self.total / GIB:.1f} GiB = weights {self.weights / GIB:.1f} + adapters {self.adapters / GIB:.2f} + "
            f"activations {self.activations / GIB:.1f} ({self.tokens} tokens) + overhead {self.overhead / GIB:.2f}"
        )


@functools.lru_cache(maxsize=8)
def adapter_parameter_count(config: TransformerConfig, spec: LoraSpec) -> int:
    """Parameters of `spec`'s adapters on a transformer of `config`: rank x (in + out) per target."""
    from framepack.models import PackedTransformer

    with torch.device("meta"):
        model = PackedTransformer(config)
    pattern = re.compile(TARGETS[spec.targets])
    return sum(
        spec.rank * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and pattern.fullmatch(name)
    )


def estimate_training_memory(
    config: TransformerConfig,
    latent_hw: tuple[int, int],
    spec: LoraSpec,
    *,
    window: int = 9,
    low_vram: bool = False,
    checkpointing: bool = True,
    shards: int = 1,
    text_tokens: int = 256 + 729,
    resident_blocks: int = 2,
) -> TrainingMemory:
    """GPU memory of one step at latent size `latent_hw` (pixels / 8), bf16 base weights.

    shards: FSDP2 process count (the base weights are split over them; 1 = one GPU or DDP).
    """
    total, largest = _parameter_counts(config)
    blocks = config.num_layers + config.num_single_layers
    if low_vram:
        block_params = _block_parameters(config)
        weights = (total - block_params + resident_blocks * largest) * 2
    else:  # FSDP2: a 1/shards slice, plus the running and the prefetched block gathered
        weights = total * 2 // shards + (2 * largest * 2 if shards > 1 else 0)
    p = config.patch_size
    noisy = window * math.ceil(latent_hw[0] / p) * math.ceil(latent_hw[1] / p)
    tokens = noisy + released_history_tokens(latent_hw, p) + text_tokens
    per_tensor = tokens * config.inner_dim * 2  # bf16
    if checkpointing:
        activations = per_tensor * (blocks + BACKWARD_WIDTHS)
    else:
        activations = per_tensor * BACKWARD_WIDTHS * blocks
    adapters = adapter_parameter_count(config, spec) * ADAPTER_BYTES
    return TrainingMemory(int(weights), int(adapters), int(activations), int(RUNTIME_OVERHEAD), tokens)


_parameter_counts = functools.lru_cache(maxsize=8)(parameter_counts)


@functools.lru_cache(maxsize=8)
def _block_parameters(config: TransformerConfig) -> int:
    from framepack.hunyuan.memory import _meta_block

    return sum(
        sum(p.numel() for p in _meta_block(config, kind).parameters()) * n
        for kind, n in (("dual", config.num_layers), ("single", config.num_single_layers))
    )


MODES = {
    "full, checkpointing": {"checkpointing": True},
    "low-VRAM streaming, checkpointing": {"checkpointing": True, "low_vram": True},
    "FSDP2 over 2 GPUs, checkpointing": {"checkpointing": True, "shards": 2},
    "full, no checkpointing": {"checkpointing": False},
}


def memory_table(
    buckets: tuple[int, ...] = (384, 512, 640), spec: LoraSpec | None = None, window: int = 9
) -> str:
    """A markdown table of GiB per GPU for the 13B model: one row per bucket (its square-most
    size) and column per mode (`MODES`)."""
    from framepack.hunyuan.buckets import nearest_bucket
    from framepack.models import PRESETS

    config, spec = PRESETS["hunyuan-13b"], spec or LoraSpec()
    lines = [
        f"| bucket (H x W) | tokens | {' | '.join(MODES)} |",
        "|---|---|" + "---|" * len(MODES),
    ]
    for bucket in buckets:
        h, w = nearest_bucket(1, 1, bucket)
        cells = []
        tokens = 0
        for options in MODES.values():
            estimate = estimate_training_memory(config, (h // 8, w // 8), spec, window=window, **options)
            cells.append(f"{estimate.total / GIB:.1f}")
            tokens = estimate.tokens
        lines.append(f"| {bucket} ({h} x {w}) | {tokens} | {' | '.join(cells)} |")
    adapters = adapter_parameter_count(config, spec)
    lines.append("")
    lines.append(
        f"rank {spec.rank} adapters ({spec.targets}): {adapters / 1e6:.1f} M parameters, "
        f"{adapters * ADAPTER_BYTES / GIB:.2f} GiB with gradients and AdamW moments; "
        f"window {window} latents; GiB per GPU."
    )
    return "\n".join(lines)
