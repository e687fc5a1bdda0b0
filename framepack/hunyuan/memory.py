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
import os
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


def default_pin_limit() -> int:
    """Pinned host memory allowed for resting blocks: a quarter of the machine's RAM, at most 8 GiB.

    Pinned (page-locked) memory copies to the GPU about twice as fast, but it cannot be swapped:
    pinning all 24 GiB of blocks fails or swaps on a 32 GB desktop. Blocks past the limit rest in
    ordinary memory.
    """
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: be modest
        ram = 16 * 2**30
    return min(8 * 2**30, ram // 4)


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


class Ledger:
    """Bytes of weights that streaming has put on the device: now, and the highest since `reset`."""

    def __init__(self) -> None:
        self.resident = 0
        self.peak = 0

    def add(self, nbytes: int) -> None:
        self.resident += nbytes
        self.peak = max(self.peak, self.resident)

    def remove(self, nbytes: int) -> None:
        self.resident -= nbytes

    def reset(self) -> None:
        self.peak = self.resident


class BlockStreamer:
    """Installed by `stream_blocks`; `remove()` puts the blocks back on `device` and unpatches.

    Each block's forward copies its weights to `device` (always a new copy, so the resting copy
    is never computed on), runs, and drops the copy. The first blocks' resting copies are pinned
    up to `pin_limit` bytes (`pinned` says how many were).
    """

    def __init__(
        self,
        blocks: list[nn.Module],
        device: torch.device,
        offload_device: torch.device,
        pin_limit: int | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.blocks = blocks
        self.device = device
        self.offload_device = offload_device
        self.ledger = ledger or Ledger()
        self.transfers = 0  # blocks copied to `device` so far
        self.pinned = 0  # bytes of pinned resting copies
        self._resting: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        can_pin = offload_device.type == "cpu" and device.type == "cuda"
        limit = default_pin_limit() if pin_limit is None else pin_limit
        for block in blocks:
            pin = can_pin and self.pinned + tensor_bytes(block) <= limit
            pairs = []
            for t in (*block.parameters(), *block.buffers()):
                rest = t.data.to(offload_device)
                if pin:
                    rest = rest.pin_memory()
                t.data = rest
                pairs.append((t, rest))
            self.pinned += tensor_bytes(block) if pin else 0
            self._resting[id(block)] = pairs
            block.forward = self._wrap(block, block.forward)

    def resting(self) -> list[torch.Tensor]:
        """The resting copies (what compute must never read)."""
        return [rest for pairs in self._resting.values() for _, rest in pairs]

    def _wrap(self, block: nn.Module, forward: Callable[..., Any]) -> Callable[..., Any]:
        pairs = self._resting[id(block)]
        nbytes = tensor_bytes(block)

        def streamed(*args: Any, **kwargs: Any) -> Any:
            for t, rest in pairs:
                t.data = rest.to(self.device, non_blocking=rest.is_pinned(), copy=True)
            self.transfers += 1
            self.ledger.add(nbytes)
            try:
                return forward(*args, **kwargs)
            finally:
                for t, rest in pairs:  # weights never change at inference: drop the copy
                    t.data = rest
                self.ledger.remove(nbytes)

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
    *,
    keep: int = 0,
    pin_limit: int | None = None,
    ledger: Ledger | None = None,
) -> BlockStreamer:
    """Low-VRAM mode: keep `model`'s blocks on `offload_device`, stream each to `device` per call.

    The first `keep` blocks (in call order) and every parameter outside the block lists are moved
    to `device` for good (`ledger` counts them). Resting copies are pinned up to `pin_limit`
    bytes (default `default_pin_limit()`). Install before TeaCache (whose skipped steps then copy
    nothing). Weights must not be changed while installed, except through the resting copies
    (LoRA merging does exactly that and stays correct).
    """
    device, offload_device = torch.device(device), torch.device(offload_device)
    blocks = [b for name in block_lists for b in getattr(model, name)]
    streamed = blocks[keep:]
    ledger = ledger or Ledger()
    streamed_ids = {id(t) for b in streamed for t in (*b.parameters(), *b.buffers())}
    for t in (*model.parameters(), *model.buffers()):
        if id(t) not in streamed_ids:
            t.data = t.data.to(device)
            ledger.add(t.numel() * t.element_size())
    return BlockStreamer(streamed, device, offload_device, pin_limit, ledger)


@contextlib.contextmanager
def on_device(
    modules: Iterable[nn.Module],
    device: torch.device | str,
    offload_device: torch.device | str | None = None,
    ledger: Ledger | None = None,
) -> Iterator[None]:
    """Copy `modules`' weights to `device` for the block; afterwards they are where they were.

    Used for the image encoder's and the VAE's whole weights, needed once per section at most.
    The copy is dropped (no copy back: weights do not change at inference). `offload_device`
    is accepted for compatibility and ignored: the resting copies stay where they are.
    """
    del offload_device
    device = torch.device(device)
    pairs = [(t, t.data) for m in modules for t in (*m.parameters(), *m.buffers())]
    nbytes = sum(rest.numel() * rest.element_size() for _, rest in pairs)
    for t, rest in pairs:
        t.data = rest.to(device, copy=True)
    if ledger is not None:
        ledger.add(nbytes)
    try:
        yield
    finally:
        for t, rest in pairs:
            t.data = rest
        if ledger is not None:
            ledger.remove(nbytes)
        if device.type == "cuda":
            torch.cuda.empty_cache()
