"""TeaCache: skip the transformer's blocks on steps where their input barely changed.

The official FramePack implementation (lllyasviel/FramePack, `hunyuan_video_packed.py`):
at each sampling step, take the modulated input of the first dual-stream block
(LayerNorm(x) * (1 + scale) + shift, from `transformer_blocks[0].norm1(temb)`); its relative L1
change since the previous step, rescaled by a fitted polynomial, is accumulated; while the sum
stays below the threshold the blocks are skipped and the residual they added last time
(output - input of the whole block stack) is reused. The first and last step of a section are
always computed. Threshold 0.15 gave ~2.1x speed-up officially, 0.1 ~1.6x; the official UI says
it "often makes hands and fingers slightly worse". Off by default here.

`install_teacache(model, ...)` patches the block instances' `forward` (state dict unchanged):
the first dual block decides, skipped blocks return their inputs, the last block adds the cached
residual. Call `TeaCache.reset()` at the start of each section.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from framepack.models.blocks import layer_norm, modulate

# Official rescale polynomial (highest power first), fitted for HunyuanVideo.
RESCALE_COEFFICIENTS = (7.33226126e02, -4.01131952e02, 6.75869174e01, -3.14987800e00, 9.61237896e-02)
DEFAULT_THRESHOLD = 0.15


def rescale(rel_l1: float, coefficients: tuple[float, ...] = RESCALE_COEFFICIENTS) -> float:
    """The fitted polynomial at `rel_l1` (Horner)."""
    out = 0.0
    for c in coefficients:
        out = out * rel_l1 + c
    return out


class TeaCache:
    """The skip decision and the cached residual for one model.

    threshold: accumulated rescaled change below which blocks are skipped (<= 0: never skip).
    num_steps: sampler steps per section (the first and last are always computed).
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, num_steps: int = 25) -> None:
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.threshold = float(threshold)
        self.num_steps = num_steps
        self.reset()

    def reset(self) -> None:
        """Start a new section (the official code re-initialises TeaCache per section)."""
        self.step = 0
        self.accumulated = 0.0
        self.previous: Tensor | None = None
        self.residual: Tensor | None = None
        self.skip = False
        self.skipped = 0
        self.computed = 0

    def decide(self, modulated: Tensor) -> bool:
        """Record this step's modulated input; True if the blocks must run."""
        edge = self.step == 0 or self.step == self.num_steps - 1
        if edge or self.previous is None or self.residual is None or self.threshold <= 0:
            compute = True
            self.accumulated = 0.0
        else:
            rel = (modulated.detach() - self.previous).abs().mean() / self.previous.abs().mean()
            self.accumulated += rescale(rel.item())
            compute = self.accumulated >= self.threshold
            if compute:
                self.accumulated = 0.0
        self.previous = modulated.detach()
        self.step = (self.step + 1) % self.num_steps
        self.skip = not compute
        if compute:
            self.computed += 1
        else:
            self.skipped += 1
        return compute


class TeaCacheHandle:
    """Returned by `install_teacache`; `remove()` restores the blocks' own forward."""

    def __init__(self, cache: TeaCache, blocks: list[nn.Module]) -> None:
        self.cache = cache
        self.blocks = blocks

    def remove(self) -> None:
        for block in self.blocks:
            del block.forward


def install_teacache(model: nn.Module, cache: TeaCache) -> TeaCacheHandle:
    """Patch `model`'s blocks for TeaCache (a PackedTransformer or anything with its block API).

    Needs `transformer_blocks` (dual: `(x, text, temb, ...) -> (x, text)`, `norm1(temb)` giving
    shift, scale first) and `single_transformer_blocks` (`(x, temb, ...) -> x`, on the joint
    `[x | text]` sequence). Install after `stream_blocks` so skipped blocks copy nothing.
    """
    dual = list(model.transformer_blocks)
    single = list(model.single_transformer_blocks)
    if not dual:
        raise ValueError("TeaCache needs at least one dual-stream block (its norm1 gives the signal)")
    blocks = dual + single
    start: dict[str, Tensor] = {}  # the block stack's input at the current step

    for i, block in enumerate(blocks):
        is_single = i >= len(dual)
        if i == len(blocks) - 1:
            forward = _last(block.forward, cache, start, is_single)
        else:
            forward = _skippable(block.forward, cache, is_single)
        if i == 0:
            forward = _first(forward, block, cache, start)
        block.forward = forward
    return TeaCacheHandle(cache, blocks)


def _first(forward: Callable[..., Any], block: nn.Module, cache: TeaCache, start: dict) -> Callable[..., Any]:
    """Decide from the first block's modulated input, remember the stack's input, then run."""

    def run(x: Tensor, text: Tensor, temb: Tensor, *rest: Any, **kwargs: Any) -> Any:
        shift, scale = block.norm1(temb)[:2]
        cache.decide(modulate(layer_norm(x), shift, scale))
        start["x"], start["text"] = x, text
        return forward(x, text, temb, *rest, **kwargs)

    return run


def _skippable(forward: Callable[..., Any], cache: TeaCache, is_single: bool) -> Callable[..., Any]:
    """A block that returns its inputs unchanged while the cache skips."""

    def run(*args: Any, **kwargs: Any) -> Any:
        if cache.skip:
            return args[0] if is_single else (args[0], args[1])
        return forward(*args, **kwargs)

    return run


def _last(forward: Callable[..., Any], cache: TeaCache, start: dict, is_single: bool) -> Callable[..., Any]:
    """The last block: add the cached residual when skipping, refresh it when computing."""

    def stack_input() -> Tensor:
        return torch.cat([start["x"], start["text"]], dim=1) if is_single else start["x"]

    def run(*args: Any, **kwargs: Any) -> Any:
        if cache.skip:
            assert cache.residual is not None
            out = stack_input() + cache.residual
            return out if is_single else (out, args[1])
        out = forward(*args, **kwargs)
        cache.residual = (out if is_single else out[0]) - stack_input()
        return out

    return run
