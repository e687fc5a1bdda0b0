"""A section's packed context, built from a latent timeline: one home for training and inference.

Training (framepack.train.layouts) and generation (framepack.pipeline) both call
`section_context`, so the contexts a model learns from and the ones it sees when sampling cannot
drift apart (tests/test_context.py builds the same section both ways).

Vocabulary: a *layout* says on which side of a section its history lies; a plan's *strategy*
(framepack.plans) says in which order sections are generated, and each strategy's sections see
one layout (`STRATEGY_LAYOUT`):

- "forward" (vanilla / F1): history before the section;
- "inverted" (inverted anti-drifting): history after the section, nearest first;
- "endpoints" (endpoints first, multi-endpoint): history on both sides.

Anchors (the start image, keyframes, an end image) are clean 1x frames placed before the history
(released: `clean_latents = [start, post]`). Missing frames are zero latents that continue the
history on its own side (`PAD_SIDE`), as the released history buffer that starts as zeros.

History discretization (SPEC sec. 4, framepack.discretize): with `quantize`, every history frame
is replaced by its nearest codebook entries before packing, in training and generation alike;
the anchors stay exact and the zero padding stays zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import islice

import torch
from torch import Tensor

from framepack.packing import PackedContext, PackedLevel, Schedule, pack
from framepack.plans import LayoutLevel, Section

LAYOUTS = ("forward", "inverted", "endpoints")
# Zero-padding frames continue the history on the side where it lies.
PAD_SIDE = {"forward": "before", "inverted": "after", "endpoints": "auto"}
# The layout whose contexts each plan strategy's sections see.
STRATEGY_LAYOUT = {
    "forward": "forward",
    "inverted": "inverted",
    "endpoints": "endpoints",
    "multi-endpoint": "endpoints",
}


def history_positions(layout: str, length: int, start: int, window: int) -> tuple[int, ...]:
    """Positions a section at `start..start+window-1` among `length` latents may see, in time
    order, position 0 (the start frame, an anchor) excluded.

    forward: 1 .. start-1; inverted: start+window .. length-1; endpoints: both. `pack` ranks
    them by time distance to the section, so the nearest frames get the finest levels.
    """
    before = tuple(range(1, start))
    after = tuple(range(start + window, length))
    if layout == "forward":
        return before
    if layout == "inverted":
        return after
    if layout == "endpoints":
        return before + after
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def section_context(
    timeline: Tensor,
    times: Tensor,
    history: Sequence[int],
    target: Sequence[int],
    schedule: Schedule,
    layout: str,
    *,
    anchors: Sequence[int] = (),
    anchor_times: Sequence[int] | None = None,
    history_noise: float = 0.0,
    generator: torch.Generator | None = None,
    quantize: Callable[[Tensor], Tensor] | None = None,
) -> PackedContext:
    """Pack the context of the section at positions `target` of a latent timeline.

    timeline: (1, C, T, h, w) latents; times: (T,) int64 frame time of each position (RoPE);
    history: positions the section may see (any order; `pack` ranks them); target: the
    section's positions; anchors: positions placed clean at the 1x level, at `anchor_times`
    (default: their own times). With `quantize` ((1, C, N, h, w) -> same shape, e.g. a
    `framepack.discretize.Codebook`), history frames are discretized (Sec. 4); anchors (the start
    image, keyframes, an end image) stay exact. History frames then get N(0, history_noise^2)
    noise (the paper's noisy-history baseline, Sec. 4). Returns a batch-1 context.
    """
    if layout not in PAD_SIDE:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    hist = list(history)
    frames = timeline[:, :, hist]  # (1, C, N, h, w)
    if quantize is not None and frames.shape[2] > 0:
        frames = quantize(frames)  # (1, C, N, h, w), each latent vector its nearest entry
    if history_noise > 0 and frames.shape[2] > 0:
        noise = torch.randn(frames.shape, generator=generator, dtype=frames.dtype)
        frames = frames + history_noise * noise
    anchor_list = list(anchors)
    if anchor_times is None:
        anchor_times = times[anchor_list].tolist()
    return pack(
        frames,
        times[hist].reshape(1, len(hist)),
        times[list(target)][None],
        schedule,
        anchors=timeline[:, :, anchor_list] if anchor_list else None,
        anchor_indices=torch.tensor([list(anchor_times)], dtype=torch.int64) if anchor_list else None,
        pad="zeros",
        pad_side=PAD_SIDE[layout],
    )


def anchor_time(frame: int, section: Section, gap: int | None) -> int:
    """RoPE time of an anchor of `section`: its true time, or at most `gap` latent frames before
    the section's start / after its end (a model's `max_anchor_gap`; None: the true time)."""
    if gap is None:
        return frame
    if frame < section.start:
        return max(frame, section.start - gap)
    return min(frame, section.stop - 1 + gap)


def plan_context(
    timeline: Tensor,
    section: Section,
    schedule: Schedule,
    layout: str,
    *,
    anchor_gap: int | None = None,
    drop_history: bool = False,
    quantize: Callable[[Tensor], Tensor] | None = None,
    history_noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> PackedContext:
    """The packed context of a general-mode plan section (framepack.plans.Section) from the
    latent timeline (1, C, T, h, w) whose positions are frame times: its history (none with
    `drop_history`), its anchors at `anchor_time`, discretized and noised as `section_context`
    does. The one context builder of generation (framepack.pipeline) and of self-rollout
    training (framepack.distill.rollout). Returns a batch-1 context."""
    # nearest first; with the time ranking only the nearest can be chosen: keep the work flat
    # (a plan's history is computed on demand, framepack.plans)
    keep = schedule.capacity if schedule.ranking == "time" else None
    hist = [] if drop_history else list(islice(section.history, keep))
    return section_context(
        timeline,
        torch.arange(timeline.shape[2]),
        hist,
        section.latent_indices,
        schedule,
        layout,
        anchors=section.anchors,
        anchor_times=[anchor_time(a, section, anchor_gap) for a in section.anchors],
        quantize=quantize,
        history_noise=history_noise,
        generator=generator,
    )


def stack_contexts(contexts: list[PackedContext]) -> PackedContext:
    """Concatenate batch-1 contexts with the same level layout along the batch axis."""
    first = contexts[0]
    for ctx in contexts[1:]:
        shapes = [(lv.kernel, lv.num_frames) for lv in ctx.levels]
        if shapes != [(lv.kernel, lv.num_frames) for lv in first.levels]:
            raise ValueError("contexts must have the same levels and frame counts to be batched")
    return PackedContext(
        tuple(
            PackedLevel(
                lv.kernel,
                torch.cat([c.levels[i].latents for c in contexts]),
                torch.cat([c.levels[i].indices for c in contexts]),
            )
            for i, lv in enumerate(first.levels)
        )
    )


def released_context(timeline: Tensor, levels: Sequence[LayoutLevel]) -> PackedContext:
    """The released layouts, index for index: `levels` (framepack.plans.LayoutLevel, token
    order) name timeline positions (None = a zero latent) and their RoPE indices.
    timeline: (1, C, T, h, w). Returns a batch-1 context."""
    zero = torch.zeros_like(timeline[:, :, 0])  # (1, C, h, w)
    packed = []
    for lv in levels:
        frames = torch.stack([zero if f is None else timeline[:, :, f] for f in lv.frames], dim=2)
        packed.append(PackedLevel(lv.kernel, frames, torch.tensor([lv.indices], dtype=torch.int64)))
    return PackedContext(tuple(packed))
