"""Contact sheets: frames of one or more videos side by side, upscaled, with time labels.

A person judges a small model's video best by looking at it: `contact_sheet` lays out every
`every`-th frame of each video as one row (or several rows of `columns` frames), scaled up with
nearest-neighbour so pixels stay pixels, with the time of each column written above it and a
label (e.g. "generated", "true") at the start of each row group.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from framepack.eval.metrics import as_frames

LABEL_HEIGHT = 12  # pixels of the time labels above each row
NAME_WIDTH = 72  # pixels of the row names on the left


def contact_sheet(
    videos: Sequence[np.ndarray],
    fps: float,
    *,
    every: int = 15,
    columns: int = 10,
    scale: int = 2,
    names: Sequence[str] | None = None,
    times: Sequence[int] | None = None,
) -> Image.Image:
    """One PIL image showing frames `times` (default 0, every, 2*every, ...) of each video.

    videos: `uint8 (F, H, W, 3)` arrays of the same frame size; frames past a video's end are
    left blank. Frame f is labelled with its time `f / fps` in seconds. The chosen frames are
    laid out in rows of `columns`; with several videos each row of times shows every video
    (one under the other), so a generated video and its reference line up frame by frame.
    """
    videos = [as_frames(v) for v in videos]
    if not videos or any(len(v) == 0 for v in videos):
        raise ValueError("contact_sheet needs at least one video with frames")
    if every < 1 or columns < 1 or scale < 1:
        raise ValueError(f"every, columns and scale must be >= 1, got {every}, {columns}, {scale}")
    h, w = videos[0].shape[1] * scale, videos[0].shape[2] * scale
    if any(v.shape[1:] != videos[0].shape[1:] for v in videos):
        raise ValueError("contact_sheet: videos must have the same frame size")
    picks = list(times) if times is not None else list(range(0, max(len(v) for v in videos), every))
    names = list(names) if names is not None else [""] * len(videos)
    left = NAME_WIDTH if any(names) else 0
    rows = [picks[i : i + columns] for i in range(0, len(picks), columns)]
    band = LABEL_HEIGHT + len(videos) * (h + 2)
    sheet = Image.new("RGB", (left + columns * (w + 2), len(rows) * band), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        top = r * band
        for v, (video, name) in enumerate(zip(videos, names)):
            y = top + LABEL_HEIGHT + v * (h + 2)
            draw.text((2, y + h // 2 - 5), name, fill=(0, 0, 0))
            for c, f in enumerate(row):
                if f < len(video):
                    tile = Image.fromarray(video[f]).resize((w, h), Image.NEAREST)
                    sheet.paste(tile, (left + c * (w + 2), y))
        for c, f in enumerate(row):
            draw.text((left + c * (w + 2) + 2, top), f"{f / fps:.2f}s", fill=(0, 0, 0))
    return sheet
