"""Training-time contexts: which true frames a section sees, in the three sampling layouts.

The packing itself is `framepack.context.section_context`, shared with generation.

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

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from framepack.context import LAYOUTS, history_positions, section_context, stack_contexts
from framepack.packing import PackedContext, Schedule

__all__ = ["LAYOUTS", "SectionLayout", "build_context", "draw_layout", "section_range", "stack_contexts"]


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
    quantize: Callable[[Tensor], Tensor] | None = None,
) -> tuple[PackedContext, Tensor, Tensor]:
    """Pack one sample's context from its true latents (`framepack.context.section_context`).

    latents: (1, C, 1 + n, h, w), position 0 the start frame; indices: (1 + n,) int64 frame
    times. Returns the packed context (batch 1), the target latents (1, C, window, h, w) and
    their frame indices (1, window). The start frame is a clean exact 1x anchor; history frames
    are discretized by `quantize` (a `framepack.discretize.Codebook`, Sec. 4) when given, then
    get N(0, history_noise^2) noise.
    """
    section = range(lay.start, lay.start + lay.window)
    context = section_context(
        latents, indices, lay.history, section, schedule, lay.layout,
        anchors=(0,), history_noise=history_noise, generator=generator, quantize=quantize,
    )  # fmt: skip
    return context, latents[:, :, lay.start : lay.start + lay.window], indices[list(section)][None]
