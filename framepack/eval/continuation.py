"""Does a video continue its start image? Frames against the true clip on the pixels still in view.

A video generated from frame 0 of a world clip with one caption should show, frame by frame,
what the true clip of that caption shows (the same world and start, the caption's action, as
`framepack.data.world.render_clip` renders it). Only pixels whose world position an earlier
frame showed can be known to a model; new land entering at the border must be invented and is
not scored. The camera path in the clip's truth says exactly which pixels those are, at any
speed: the world rounds its exact path to whole pixels per frame, and the truth holds the rounded
positions. Moving objects count as they are in the true clip.

Issue 20's target: the first 8 frames >= 26 dB against the truth on pixels still in view
(`continuation_psnr`). It replaces a comparison with the start image shifted by the prompted
motion rounded to whole pixels, which misplaces sub-pixel speeds by a pixel (1.5 px/frame:
Python rounds 4.5 to 4, the world's path rounds it half up to 5) and ignores moving objects.
The section test (one section from true context) uses the same mask with the context frames
as the ones seen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from framepack.eval.metrics import as_frames, psnr

CONTINUATION_FRAMES = 8  # frames after the start frame (issue 20)


def in_view_mask(
    cameras: np.ndarray, targets: Sequence[int], seen: Sequence[int], height: int, width: int
) -> np.ndarray:
    """Bool `(len(targets), height, width)`: the pixels of each target frame whose world position
    one of the `seen` frames showed.

    cameras: `(F, 2)` integer view centres (x, y) in world pixels, frame f's view covering
    `[x - width // 2, x - width // 2 + width)` x `[y - height // 2, ...)` (`render_clip`'s truth,
    `framepack.data.world_script.camera_path`).
    """
    cameras = np.asarray(cameras, dtype=np.int64)
    cols, rows = np.arange(width) - width // 2, np.arange(height) - height // 2
    out = np.zeros((len(targets), height, width), dtype=bool)
    for i, f in enumerate(targets):
        wx, wy = cameras[f, 0] + cols, cameras[f, 1] + rows  # (W,), (H,) world positions
        for g in seen:
            gx, gy = cameras[g, 0] - width // 2, cameras[g, 1] - height // 2  # seen view's corner
            in_x = (wx >= gx) & (wx < gx + width)
            in_y = (wy >= gy) & (wy < gy + height)
            out[i] |= in_y[:, None] & in_x[None, :]
    return out


def continuation_psnr(
    frames: np.ndarray | torch.Tensor,
    truth: np.ndarray | torch.Tensor,
    cameras: np.ndarray,
    count: int = CONTINUATION_FRAMES,
) -> float:
    """PSNR in dB of frames 1..count against the true clip's, on the pixels frame 0 showed.

    frames, truth: `uint8 (F, H, W, 3)` (or pipeline pixels, see `as_frames`), both starting at
    the same start frame, at least `count + 1` frames; cameras: the truth's `(F', 2)` view
    centres, F' >= count + 1. `inf` when the in-view pixels are identical.
    """
    frames, truth = as_frames(frames), as_frames(truth)
    if min(len(frames), len(truth), len(cameras)) < count + 1:
        raise ValueError(
            f"continuation_psnr needs {count + 1} frames, truth frames and cameras; "
            f"got {len(frames)}, {len(truth)}, {len(cameras)}"
        )
    if frames.shape[1:] != truth.shape[1:]:
        raise ValueError(f"continuation_psnr: frame sizes differ, {frames.shape[1:]} vs {truth.shape[1:]}")
    height, width = truth.shape[1:3]
    mask = in_view_mask(cameras, range(1, count + 1), [0], height, width)[..., None]  # (count, H, W, 1)
    return psnr(truth[1 : count + 1], frames[1 : count + 1], mask)


def pooled_psnr(values: Sequence[float]) -> float:
    """The PSNR of the mean squared error of several PSNRs in dB (equal pixel counts assumed):
    a bad case weighs by its error, not by its decibels. `inf` only when all are."""
    errors = [10 ** (-v / 10) for v in values]  # MSE / peak**2; 0 for inf
    if not errors:
        raise ValueError("pooled_psnr needs at least one value")
    mean = float(np.mean(errors))
    return float("inf") if mean == 0 else float(-10 * np.log10(mean))
