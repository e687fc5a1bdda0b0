"""Weight-free per-frame metrics on `uint8 (F, H, W, 3)` RGB frames (SPEC.md section 6).

The paper measures drift with downloaded networks (MUSIQ, LAION aesthetic, RAFT...); these are
offline stand-ins that need no weights. Units are 8-bit levels unless stated:

- sharpness: variance of the 4-neighbour Laplacian of luminance (valid interior pixels).
  Blur lowers it; noise raises it.
- luminance: mean Rec. 601 luma `0.299 R + 0.587 G + 0.114 B`, 0..255 (exposure drift).
- saturation: mean HSV saturation `(max - min) / max` (0 where max = 0), 0..1 (colour fading
  or over-saturation drift).
- histogram distance: total-variation distance (half the L1 distance) between the frame's
  joint RGB histogram (8 bins per channel, 512 bins, normalised) and the first frame's, 0..1
  (0: same colour distribution; 1: no colour in common).
- motion: mean absolute difference to the previous frame over all pixels and channels,
  0..255; `F - 1` values, value `j` compares frames `j + 1` and `j`.

Frames are processed in chunks, so memory stays small for long videos. `psnr` and
`palette_share` are helpers for measurements against known frames (e.g. the procedural world).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from framepack.video import to_uint8_frames

HISTOGRAM_BINS = 8  # per channel; 8**3 = 512 joint bins
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_CHUNK_PIXELS = 1 << 20  # pixels per chunk: keeps temporaries in cache-friendly sizes


def as_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Frames as numpy `uint8 (F, H, W, 3)`; float pipeline pixels in [-1, 1] are converted."""
    return to_uint8_frames(frames)


def _chunk_size(frames: np.ndarray) -> int:
    return max(1, _CHUNK_PIXELS // max(1, frames.shape[1] * frames.shape[2]))


def _chunks(frames: np.ndarray) -> Iterator[np.ndarray]:
    size = _chunk_size(frames)
    for start in range(0, len(frames), size):
        yield frames[start : start + size]


def luminance_map(frames: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of `uint8 (F, H, W, 3)` -> float32 `(F, H, W)`, 0..255."""
    y = frames[..., 0] * _LUMA[0]
    y += frames[..., 1] * _LUMA[1]
    y += frames[..., 2] * _LUMA[2]
    return y


def sharpness(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Variance of the Laplacian of luminance per frame, float64 `(F,)`. Needs H, W >= 3."""
    frames = as_frames(frames)
    if min(frames.shape[1:3]) < 3:
        raise ValueError(f"sharpness needs frames of at least 3x3 pixels, got {frames.shape[1:3]}")
    out = []
    for chunk in _chunks(frames):
        y = luminance_map(chunk)
        lap = y[:, :-2, 1:-1] + y[:, 2:, 1:-1]  # (f, H-2, W-2) 4-neighbour Laplacian
        lap += y[:, 1:-1, :-2]
        lap += y[:, 1:-1, 2:]
        lap -= 4 * y[:, 1:-1, 1:-1]
        out.append(lap.reshape(len(chunk), -1).var(axis=1, dtype=np.float64))
    return np.concatenate(out)


def luminance(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Mean luma per frame, float64 `(F,)`, 0..255."""
    frames = as_frames(frames)
    return np.concatenate([luminance_map(c).mean(axis=(1, 2), dtype=np.float64) for c in _chunks(frames)])


def saturation(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Mean HSV saturation per frame, float64 `(F,)`, 0..1."""
    frames = as_frames(frames)
    out = []
    for chunk in _chunks(frames):
        r, g, b = chunk[..., 0], chunk[..., 1], chunk[..., 2]
        hi = np.maximum(np.maximum(r, g), b)
        lo = np.minimum(np.minimum(r, g), b)
        s = np.divide((hi - lo).astype(np.float32), hi, out=np.zeros(hi.shape, np.float32), where=hi > 0)
        out.append(s.mean(axis=(1, 2), dtype=np.float64))
    return np.concatenate(out)


def color_histograms(frames: np.ndarray | torch.Tensor, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Normalised joint RGB histograms, float64 `(F, bins**3)`; `bins` a power of 2 up to 32."""
    frames = as_frames(frames)
    if bins < 1 or bins & (bins - 1) or bins > 32:
        raise ValueError(f"bins must be a power of 2 up to 32 (1, 2, 4, 8, 16, 32), got {bins}")
    shift, bits = (256 // bins).bit_length() - 1, bins.bit_length() - 1
    out = []
    for chunk in _chunks(frames):
        q = (chunk >> shift).astype(np.uint16)  # (f, H, W, 3) bin per channel
        index = (q[..., 0] << 2 * bits) | (q[..., 1] << bits) | q[..., 2]  # (f, H, W) joint bin
        counts = np.stack([np.bincount(i.ravel(), minlength=bins**3) for i in index])
        out.append(counts / counts.sum(axis=1, keepdims=True))
    return np.concatenate(out)


def histogram_distance(
    frames: np.ndarray | torch.Tensor, reference: np.ndarray | None = None, bins: int = HISTOGRAM_BINS
) -> np.ndarray:
    """Total-variation distance of each frame's RGB histogram to `reference`'s, `(F,)`, 0..1.

    reference: `uint8 (H, W, 3)`; default the first frame.
    """
    frames = as_frames(frames)
    ref = frames[:1] if reference is None else np.asarray(reference, dtype=np.uint8)[None]
    ref_hist = color_histograms(ref, bins)[0]
    return 0.5 * np.abs(color_histograms(frames, bins) - ref_hist).sum(axis=1)


def motion(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Mean absolute difference between consecutive frames, float64 `(F - 1,)`, 0..255."""
    frames = as_frames(frames)
    out = []
    size = _chunk_size(frames)
    for start in range(0, len(frames) - 1, size):
        a = frames[start : start + size + 1].astype(np.int16)
        out.append(np.abs(np.diff(a, axis=0)).mean(axis=(1, 2, 3), dtype=np.float64))
    return np.concatenate(out) if out else np.zeros(0)


def frame_metrics(frames: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """All per-frame metrics: name -> float64 array (`(F,)`, or `(F - 1,)` for motion)."""
    frames = as_frames(frames)
    return {
        "sharpness": sharpness(frames),
        "luminance": luminance(frames),
        "saturation": saturation(frames),
        "histogram_distance": histogram_distance(frames),
        "motion": motion(frames),
    }


# --------------------------------------------------------------------------------------------
# Helpers for measurements against known frames
# --------------------------------------------------------------------------------------------


def psnr(
    a: np.ndarray | torch.Tensor,
    b: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor | None = None,
    *,
    peak: float | None = None,
) -> float:
    """Peak signal-to-noise ratio in dB between two arrays of the same shape.

    peak: the signal range; default 255 for integer arrays and 2 for float arrays (pipeline
        pixels in [-1, 1]). Pass 1.0 for floats in [0, 1].
    mask: bool, broadcastable to the arrays' shape; only true elements count.
    Returns `inf` for identical inputs.
    """
    a_np, b_np = _numpy(a), _numpy(b)
    if a_np.shape != b_np.shape:
        raise ValueError(f"psnr: shapes differ, {a_np.shape} vs {b_np.shape}")
    if peak is None:
        peak = 255.0 if np.issubdtype(a_np.dtype, np.integer) else 2.0
    err = (a_np.astype(np.float64) - b_np.astype(np.float64)) ** 2
    if mask is not None:
        keep = np.broadcast_to(_numpy(mask).astype(bool), err.shape)
        if not keep.any():
            raise ValueError("psnr: the mask selects no elements")
        err = err[keep]
    mse = float(err.mean())
    return float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse))


def palette_share(frames: np.ndarray | torch.Tensor, palette: np.ndarray | list, tol: float = 16) -> float:
    """Share of pixels (0..1) whose colour lies within `tol` of some palette colour.

    "Within tol" means every channel differs by at most `tol` 8-bit levels (L-infinity
    distance). palette: `(K, 3)` 8-bit RGB colours.
    """
    frames = as_frames(frames)
    colors = np.asarray(palette, dtype=np.int16).reshape(-1, 3)
    hits = total = 0
    for chunk in _chunks(frames):
        pixels = chunk.reshape(-1, 1, 3).astype(np.int16)  # (N, 1, 3)
        near = (np.abs(pixels - colors[None]).max(axis=-1) <= tol).any(axis=1)  # (N,)
        hits += int(near.sum())
        total += near.size
    return hits / total if total else 0.0


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    return np.asarray(x)


def report_json(report: Any, **kwargs: Any) -> str:
    """`report` as strict JSON: a non-finite number (the PSNR of a lossless frame is infinite)
    becomes the string "inf", "-inf" or "nan", which every JSON parser reads; `read_report`
    turns them back into floats."""
    return json.dumps(_finite(report), allow_nan=False, **kwargs)


def read_report(text: str) -> Any:
    """The inverse of `report_json`."""
    return _infinite(json.loads(text))


_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _infinite(obj: Any) -> Any:
    if isinstance(obj, str):
        return _NON_FINITE.get(obj, obj)
    if isinstance(obj, dict):
        return {k: _infinite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_infinite(v) for v in obj]
    return obj
