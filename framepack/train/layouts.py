"""Training-time contexts: which true frames a section sees, in the three sampling layouts.

One model learns all three layouts of the paper (Sec. 3), drawn at random per micro-batch:

- "forward" (vanilla / F1): the start frame and the most recent frames *before* the section;
- "inverted" (inverted anti-drifting, image-to-video): the start frame and the frames *after*
  the section, nearest first (the released inverted model's `post, 2x, 4x` history);
- "endpoints" (anti-drifting, endpoints first): the start frame and frames on *both* sides,
  ranked by their distance to the section.

The start frame (latent 0, the user's image) is always in context as a 1x anchor, like the
released `clean_latents = [start, post]`. Context frames are true frames of the clip, optionally
with Gaussian noise of std `history_noise` (the paper's noise-on-history baseline, Sec. 4).
The frames are packed with the run's schedule (`framepack.packing.pack`, time-proximity ranking):
the frames nearest the section get the finest levels, missing ones are zero latents (as the
released history buffer that starts as zeros). All frame indices are true times in latent frames, so RoPE sees
the real gaps: a sample is the start frame plus a window of the video that may begin far from
it (framepack.train.data), as a section of an inverted or endpoints plan does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from framepack.packing import PackedContext, PackedLevel, Schedule, pack

LAYOUTS = ("forward", "inverted", "endpoints")


@dataclass(frozen=True)
class SectionLayout:
    """Where a section sits among a sample's latents and which of them it sees.

    A sample holds `1 + n` latents: position 0 is the start frame (frame index 0), positions
    1..n a contiguous window of the video (frame indices `offset .. offset + n - 1`).

    layout:  "forward", "inverted" or "endpoints".
    start:   position of the section's first latent (1 .. n - window + 1).
    window:  latent frames in the section.
    history: positions the section may see, in time order (the start frame excluded).
    """

    layout: str
    length: int
    start: int
    window: int
    history: tuple[int, ...]

    @property
    def section(self) -> range:
        return range(self.start, self.start + self.window)


def section_range(layout: str, length: int, window: int) -> tuple[int, int]:
    """Inclusive range of section start positions for `layout` among `length` = 1 + n latents.

    Every section leaves room for the start frame before it; "endpoints" also keeps at least
    one frame on each side when the window allows it.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if length < window + 1:
        raise ValueError(f"{length} latents are too few for a window of {window} plus a start frame")
    lo, hi = 1, length - window
    if layout == "endpoints" and hi - 1 >= lo + 1:
        lo, hi = lo + 1, hi - 1
    return lo, hi


def history_positions(layout: str, length: int, start: int, window: int) -> tuple[int, ...]:
    """The positions a section may see, in time order (the start frame 0 excluded).

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


# Zero-padding frames continue the history on the side where a sampler's history buffer lies.
PAD_SIDE = {"forward": "before", "inverted": "after", "endpoints": "auto"}


def draw_layout(
    layouts: tuple[str, ...], length: int, window: int, generator: torch.Generator, first: bool = False
) -> SectionLayout:
    """Pick a layout uniformly from `layouts` and a section start uniformly in its range
    (its first position with `first`: the section nearest the start frame)."""
    layout = layouts[int(torch.randint(len(layouts), (1,), generator=generator))]
    lo, hi = section_range(layout, length, window)
    start = int(torch.randint(lo, hi + 1, (1,), generator=generator))
    if first:
        start = lo
    return SectionLayout(layout, length, start, window, history_positions(layout, length, start, window))


def build_context(
    latents: Tensor,
    indices: Tensor,
    lay: SectionLayout,
    schedule: Schedule,
    history_noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[PackedContext, Tensor, Tensor]:
    """Pack one sample's context from its true latents.

    latents: (1, C, 1 + n, h, w), position 0 the start frame; indices: (1 + n,) int64 frame
    times. Returns the packed context (batch 1), the target latents (1, C, window, h, w) and
    their frame indices (1, window). The start frame is a clean 1x anchor; history frames get
    N(0, history_noise^2) noise.
    """
    positions = list(lay.history)
    history = latents[:, :, positions]  # (1, C, N, h, w)
    if history_noise > 0 and history.shape[2] > 0:
        noise = torch.randn(history.shape, generator=generator, dtype=history.dtype)
        history = history + history_noise * noise
    section = slice(lay.start, lay.start + lay.window)
    target_idx = indices[section][None]  # (1, window)
    context = pack(
        history,
        indices[positions][None],
        target_idx,
        schedule,
        anchors=latents[:, :, :1],
        anchor_indices=indices[:1][None],
        pad="zeros",
        pad_side=PAD_SIDE[lay.layout],
    )
    return context, latents[:, :, section], target_idx


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
