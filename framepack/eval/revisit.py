"""Revisit consistency: where a script brings the camera back to a view it showed before, does
the video show the same place again? (docs/drift.md)

A correct world model shows the same pixels at both visits (up to the moving objects); a
drifting one shows whatever its history turned into. The pairs come from the script's exact
camera path (framepack.data.world_script.camera_path), so the measure needs no network.
"""

from __future__ import annotations

import numpy as np

from framepack.eval.metrics import psnr


def revisit_pairs(cameras: np.ndarray, min_gap: int, away: float, every: int = 1) -> list[tuple[int, int]]:
    """Frame pairs (earlier, later) whose camera positions are equal, where the camera left the
    view in between.

    cameras: (F, 2) integer view centres per frame; min_gap: at least this many frames apart;
    away: in between, the camera was at least this many pixels (max of |dx|, |dy|) from the
    view (a frame width: the view left the picture entirely); every: consider every `every`-th
    later frame. Each later frame is paired with its earliest such earlier frame.
    """
    cameras = np.asarray(cameras, dtype=np.int64)
    if cameras.ndim != 2 or cameras.shape[1] != 2:
        raise ValueError(f"cameras must be (F, 2), got shape {cameras.shape}")
    pairs = []
    for later in range(0, len(cameras), max(1, every)):
        same = np.flatnonzero((cameras[: max(0, later - min_gap + 1)] == cameras[later]).all(axis=1))
        for earlier in same:
            between = cameras[earlier : later + 1] - cameras[later]
            if np.abs(between).max(axis=1).max() >= away:
                pairs.append((int(earlier), later))
                break
    return pairs


def revisit_psnr(frames: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    """Mean PSNR (dB) between the frames of each pair; frames (F, H, W, 3) uint8. NaN without pairs."""
    if not pairs:
        return float("nan")
    values = [psnr(frames[a], frames[b]) for a, b in pairs]
    return float(np.mean(np.minimum(values, 100.0)))  # identical frames count as 100 dB
