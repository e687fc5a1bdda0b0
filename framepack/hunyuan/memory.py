"""Memory helpers for the 13B model: VRAM estimate, block streaming, encoder offloading.

- `estimate_vram`: weights + activations of one transformer call, from parameter counts and
  token counts (printed before a run).
- `stream_blocks`: low-VRAM mode. The transformer's blocks stay in (pinned) CPU memory and each is
  copied to the GPU just before its forward and dropped right after (the official demo's
  `DynamicSwapInstaller` plays the same role); everything else stays on the GPU.
- `on_device`: a context that puts the text/image encoders or the VAE on the GPU for one use and
  sends them back to the CPU afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from framepack.kernels import RELEASED_FRAMES
from framepack.models.config import TransformerConfig
from framepack.packing import released

MODES = ("normal", "low-vram")
BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks")
# Live (B=1) activation tensors of width D at a block's peak: inputs, q/k/v, attention output,
# the 4x MLP hidden before and after GELU, the residual. A conservative count for inference
# with a memory-efficient attention kernel (no S x S matrix).
ACTIVATION_WIDTHS = 16
RUNTIME_OVERHEAD = 0.75 * 2**30  # CUDA context, allocator slack, RoPE tables


@dataclass(frozen=True)
class VramEstimate:
    """Bytes on the GPU during one transformer call."""

    weights: int
    activations: int
    overhead: int
    tokens: int
    mode: str

    @property
    def total(self) -> int:
        return self.weights + self.activations + self.overhead

    def __str__(self) -> str:
        gib = 2**30
        return (
            f"estimated VRAM ({self.mode}): {self.total / gib:.1f} GiB = weights {self.weights / gib:.1f} + "
            f"activations {self.activations / gib:.1f} ({self.tokens} tokens) + overhead {self.overhead / gib:.1f}"
        )


def parameter_counts(config: TransformerConfig) -> tuple[int, int]:
    """(all parameters, parameters of the largest block) of a PackedTransformer, built on meta."""
    from framepack.models.transformer import PackedTransformer

    with torch.device("meta"):
        model = PackedTransformer(config)
    total = sum(p.numel() for p in model.parameters())
    blocks = [b for name in BLOCK_LISTS for b in getattr(model, name)]
    largest = max((sum(p.numel() for p in b.parameters()) for b in blocks), default=0)
    return total, largest


def released_history_tokens(latent_hw: tuple[int, int], patch: int = 2) -> int:
    """Context tokens of the released layout (`framepack.kernels.RELEASED_FRAMES`): 1x (start +
    1 frame), 2x (2 frames), 4x (16 frames), counted by `framepack.packing`."""
    if patch != 2:
        raise ValueError(f"the released layout patchifies by 2, got patch {patch}")
    history = sum(RELEASED_FRAMES.values())
    return released().total_tokens(history, latent_hw, anchors=1)


def estimate_vram(
    config: TransformerConfig,
    latent_hw: tuple[int, int],
    window: int,
    history_tokens: int,
    dtype: torch.dtype = torch.bfloat16,
    mode: str = "normal",
    *,
    text_tokens: int = 256 + 729,
    resident_blocks: int = 2,
) -> VramEstimate:
    """Estimate the GPU memory of one transformer call.

    latent_hw: (h, w) latent size (pixels / 8); window: noisy latent frames per section;
    history_tokens: packed context tokens; text_tokens: text + image tokens (256 + 729 released).
    mode: "normal" (all weights resident) or "low-vram" (blocks streamed, `resident_blocks` of the
    largest block on the GPU at once).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if window < 1 or history_tokens < 0 or min(latent_hw) < 1:
        raise ValueError(
            f"window, history_tokens and latent_hw must be positive, got {window}, {history_tokens}, {latent_hw}"
        )
    size = torch.empty((), dtype=dtype).element_size()
    total, largest = parameter_counts(config)
    if mode == "normal":
        weights = total * size
    else:
        block_params = sum(
            sum(p.numel() for p in _meta_block(config, kind).parameters()) * n
            for kind, n in (("dual", config.num_layers), ("single", config.num_single_layers))
        )
        weights = (total - block_params + resident_blocks * largest) * size
    p = config.patch_size
    noisy = window * math.ceil(latent_hw[0] / p) * math.ceil(latent_hw[1] / p)
    tokens = noisy + history_tokens + text_tokens
    activations = tokens * config.inner_dim * size * ACTIVATION_WIDTHS
    return VramEstimate(int(weights), int(activations), int(RUNTIME_OVERHEAD), tokens, mode)


def _meta_block(config: TransformerConfig, kind: str) -> nn.Module:
    from framepack.models.blocks import DualStreamBlock, SingleStreamBlock

    cls = DualStreamBlock if kind == "dual" else SingleStreamBlock
    with torch.device("meta"):
        return cls(config.inner_dim, config.num_attention_heads, config.mlp_ratio)


# ----------------------------------------------------------------------------- block streaming


class BlockStreamer:
    """Installed by `stream_blocks`; `remove()` puts the blocks back on `device` and unpatches."""

    def __init__(self, blocks: list[nn.Module], device: torch.device, offload_device: torch.device) -> None:
        self.blocks = blocks
        self.device = device
        self.offload_device = offload_device
        self.transfers = 0  # blocks copied to `device` so far
        self._resting: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        pin = offload_device.type == "cpu" and device.type == "cuda"
        for block in blocks:
            tensors = [*block.parameters(), *block.buffers()]
            pairs = []
            for t in tensors:
                rest = t.data.to(offload_device)
                if pin:
                    rest = rest.pin_memory()
                t.data = rest
                pairs.append((t, rest))
            self._resting[id(block)] = pairs
            block.forward = self._wrap(block, block.forward)

    def _wrap(self, block: nn.Module, forward: Callable[..., Any]) -> Callable[..., Any]:
        pairs = self._resting[id(block)]

        def streamed(*args: Any, **kwargs: Any) -> Any:
            for t, rest in pairs:
                t.data = rest.to(self.device, non_blocking=True)
            self.transfers += 1
            try:
                return forward(*args, **kwargs)
            finally:
                for t, rest in pairs:  # weights never change at inference: drop the GPU copy
                    t.data = rest

        return streamed

    def remove(self) -> None:
        for block in self.blocks:
            del block.forward
            for t, rest in self._resting[id(block)]:
                t.data = rest.to(self.device)
        self._resting.clear()


def stream_blocks(
    model: nn.Module,
    device: torch.device | str,
    offload_device: torch.device | str = "cpu",
    block_lists: Iterable[str] = BLOCK_LISTS,
) -> BlockStreamer:
    """Low-VRAM mode: keep `model`'s blocks on `offload_device`, stream each to `device` per call.

    Every parameter outside the block lists is moved to `device`. Install before TeaCache (whose
    skipped steps then copy nothing). Weights must not be changed while installed, except
    through the resting copies (LoRA merging does exactly that and stays correct).
    """
    device, offload_device = torch.device(device), torch.device(offload_device)
    blocks = [b for name in block_lists for b in getattr(model, name)]
    block_ids = {id(t) for b in blocks for t in (*b.parameters(), *b.buffers())}
    for t in (*model.parameters(), *model.buffers()):
        if id(t) not in block_ids:
            t.data = t.data.to(device)
    return BlockStreamer(blocks, device, offload_device)


@contextlib.contextmanager
def on_device(
    modules: Iterable[nn.Module], device: torch.device | str, offload_device: torch.device | str = "cpu"
) -> Iterator[None]:
    """Move `modules` to `device` for the block, then back to `offload_device` (and free the cache).

    Used for the text and image encoders and the VAE, each needed once or once per section.
    """
    modules = list(modules)
    for m in modules:
        m.to(device)
    try:
        yield
    finally:
        for m in modules:
            m.to(offload_device)
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
