"""A long video against the true video of the same script, window by window.

A generated minute is cut into windows of `WINDOW_SECONDS` (10 windows in a minute); in each,
three weight-free statistics of the generated frames are compared with those of the true video:
the share of on-palette pixels and the mean sharpness (Laplacian variance) as relative
deviations `|gen - true| / true`, and the mean colour histogram as a total-variation distance
(0 same, 1 no colour in common). Drift shows as deviations that grow window by window; issue 20
asks for every window within 0.15. Statistics of several videos pool by their mean per window
(`mean_stats`) before the comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from framepack.eval.metrics import as_frames, color_histograms, palette_share, sharpness

WINDOW_SECONDS = 6.0
PALETTE_TOL = 16  # 8-bit levels per channel (framepack.eval.metrics.palette_share)


def window_count(num_frames: int, fps: float, seconds: float = WINDOW_SECONDS) -> int:
    """Windows of about `seconds` in a video of `num_frames` at `fps` (at least 1)."""
    return max(1, round(num_frames / fps / seconds))


def window_stats(
    frames: np.ndarray | torch.Tensor, windows: int, palette: np.ndarray | list, tol: float = PALETTE_TOL
) -> dict[str, np.ndarray]:
    """Per window (`np.array_split` of the frames): `palette` on-palette share `(windows,)`,
    `sharpness` mean Laplacian variance `(windows,)`, `histogram` mean colour histogram
    `(windows, bins)`. frames: `uint8 (F, H, W, 3)`, F >= windows."""
    frames = as_frames(frames)
    if not 1 <= windows <= len(frames):
        raise ValueError(f"window_stats needs 1 <= windows <= frames, got {windows} windows of {len(frames)}")
    parts = np.array_split(np.arange(len(frames)), windows)
    sharp = sharpness(frames)
    return {
        "palette": np.array([palette_share(frames[p], palette, tol) for p in parts]),
        "sharpness": np.array([sharp[p].mean() for p in parts]),
        "histogram": np.stack([color_histograms(frames[p]).mean(axis=0) for p in parts]),
    }


def mean_stats(stats: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The window statistics of several videos (same window count), averaged per window."""
    return {k: np.mean([s[k] for s in stats], axis=0) for k in stats[0]}


def window_deviations(generated: dict[str, np.ndarray], true: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per window, how far the generated statistics are from the true ones: `palette` and
    `sharpness` relative deviations, `histogram` total-variation distance; each `(windows,)`."""
    return {
        "palette": np.abs(generated["palette"] - true["palette"]) / true["palette"],
        "sharpness": np.abs(generated["sharpness"] - true["sharpness"]) / true["sharpness"],
        "histogram": 0.5 * np.abs(generated["histogram"] - true["histogram"]).sum(axis=1),
    }
