"""Drift measures: start-end contrast of per-frame metrics and spikes at section seams.

Start-end contrast (paper, SPEC.md section 6): for a per-frame metric M,
`|M(first 15% of frames) - M(last 15%)|`, where M(window) is the mean over the window; larger
means more drift. We also report the relative contrast, divided by `|M(first 15%)|`, as the
issues state goals such as "sharpness start-end contrast <= 15%".

Seam spikes: a section-by-section generator can jump where one section meets the next. The
spike ratio at a boundary frame b (the first frame of a new section) is
`(motion[b] + eps) / (median motion of non-boundary frames + eps)`, where `motion[b]` is the
mean absolute difference between frames b and b - 1 and `eps = 0.01` levels keeps a static
video at ratio 1. A ratio near 1 means the seam is invisible in motion; a ratio well above 1
(say > 3) is a visible jump.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from framepack.eval.metrics import as_frames, frame_metrics

WINDOW_SHARE = 0.15  # the paper's "first/last 15% of frames"
SEAM_EPS = 0.01  # 8-bit levels

# Distances to the first frame are ~0 in the first window by construction: no relative contrast.
NO_RELATIVE = frozenset({"histogram_distance"})

# name -> unit, in the report's row order
UNITS: dict[str, str] = {
    "sharpness": "levels^2",
    "luminance": "levels",
    "saturation": "0..1",
    "histogram_distance": "0..1",
    "motion": "levels",
}


def window_size(length: int, share: float = WINDOW_SHARE) -> int:
    """Frames in each end window: `round(share * length)`, at least 1, at most `length`."""
    return max(1, min(length, round(share * length)))


def start_end_contrast(values: np.ndarray | Sequence[float], share: float = WINDOW_SHARE) -> dict[str, Any]:
    """Means of the first and last `share` of `values`, their absolute and relative difference.

    Returns `{"first", "last", "contrast", "relative", "window"}`; `relative` is
    `contrast / |first|`, or None when `first` is 0.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("start_end_contrast: no values")
    n = window_size(values.size, share)
    first, last = float(values[:n].mean()), float(values[-n:].mean())
    contrast = abs(first - last)
    return {
        "first": first,
        "last": last,
        "contrast": contrast,
        "relative": contrast / abs(first) if first != 0 else None,
        "window": n,
    }


def section_boundaries(num_frames: int, section_frames: int, offset: int = 0) -> list[int]:
    """First frame of every section after the first: `offset + k * section_frames`, `0 < b < F`."""
    if section_frames < 1:
        raise ValueError(f"section_frames must be >= 1, got {section_frames}")
    return [b for b in range(offset + section_frames, num_frames, section_frames) if b > 0]


def seam_spikes(motion: np.ndarray, boundaries: Sequence[int], eps: float = SEAM_EPS) -> dict[str, Any]:
    """Motion spike ratio at each boundary frame (see the module docstring).

    motion: `(F - 1,)` from `metrics.motion`; boundaries: frame indices in `1..F-1`.
    Returns `{"boundaries", "ratios", "max", "mean", "baseline"}` (max/mean None without seams).
    """
    motion = np.asarray(motion, dtype=np.float64)
    bounds = sorted({int(b) for b in boundaries if 0 < int(b) <= motion.size})
    at_seam = np.zeros(motion.size, dtype=bool)
    at_seam[[b - 1 for b in bounds]] = True
    rest = motion[~at_seam]
    baseline = float(np.median(rest)) if rest.size else 0.0
    ratios = [(float(motion[b - 1]) + eps) / (baseline + eps) for b in bounds]
    return {
        "boundaries": bounds,
        "ratios": ratios,
        "max": max(ratios) if ratios else None,
        "mean": float(np.mean(ratios)) if ratios else None,
        "baseline": baseline,
    }


def seam_ratio(motion: np.ndarray, boundaries: Sequence[int], eps: float = SEAM_EPS) -> float:
    """Mean frame-to-frame change into the boundary frames over the mean change elsewhere
    (1: seams invisible in motion; the demo issue's target is <= 1.5).

    motion: `(F - 1,)` from `metrics.motion`; boundaries: first frames of latents or sections.
    """
    motion = np.asarray(motion, dtype=np.float64)
    at = np.zeros(motion.size, dtype=bool)
    at[[int(b) - 1 for b in boundaries if 0 < int(b) <= motion.size]] = True
    if not at.any() or at.all():
        raise ValueError("seam_ratio needs boundary frames and frames between them")
    return float((motion[at].mean() + eps) / (motion[~at].mean() + eps))


def _ratio_or_none(motion: np.ndarray, boundaries: Sequence[int]) -> float | None:
    """`seam_ratio`, or None when the boundaries leave no seam or no frame between seams."""
    inside = {int(b) for b in boundaries if 0 < int(b) <= motion.size}
    return seam_ratio(motion, sorted(inside)) if 0 < len(inside) < motion.size else None


def drift_report(
    frames: np.ndarray | torch.Tensor,
    fps: float,
    section_frames: int | None = None,
    boundaries: Sequence[int] | None = None,
    latent_boundaries: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Start-end contrast of every per-frame metric, and seam spikes when sections are known.

    frames: `uint8 (F, H, W, 3)` (or float pipeline pixels); needs F >= 2 and H, W >= 3.
    section_frames: frames per section, boundaries at multiples of it; `boundaries` (explicit
        first frames of sections) takes precedence. latent_boundaries: first frames of latents
        (the codec's time groups), for the latent seam ratio.
    Returns a JSON-ready dict: `frames, fps, seconds, window, metrics{name: {first, last,
    contrast, relative, unit}}, seams` (seams None when no sections are given; relative None
    for histogram_distance, which is 0 at the first frame by construction).
    """
    frames = as_frames(frames)
    if len(frames) < 2:
        raise ValueError(f"drift_report needs at least 2 frames, got {len(frames)}")
    series = frame_metrics(frames)
    metrics = {}
    for name, values in series.items():
        row = start_end_contrast(values)
        row.pop("window")
        if name in NO_RELATIVE:
            row["relative"] = None
        metrics[name] = {**row, "unit": UNITS[name]}
    if boundaries is None and section_frames:
        boundaries = section_boundaries(len(frames), section_frames)
    # a video's metadata may claim seams outside it, or at every frame: those give no ratio
    seams = seam_spikes(series["motion"], boundaries) if boundaries else None
    ratio = _ratio_or_none(series["motion"], seams["boundaries"]) if seams else None
    if seams is not None and ratio is not None:
        seams["section_frames"] = section_frames
        seams["ratio"] = ratio
    else:
        seams = None
    latent_ratio = _ratio_or_none(series["motion"], latent_boundaries or ())
    latent = None if latent_ratio is None else {"ratio": latent_ratio}
    return {
        "frames": len(frames),
        "fps": float(fps),
        "seconds": len(frames) / float(fps),
        "window": window_size(len(frames)),
        "metrics": metrics,
        "seams": seams,
        "latent_seams": latent,
    }


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of a `drift_report` (metric, first 15%, last 15%, contrast, relative)."""
    lines = [
        f"{report['frames']} frames at {report['fps']:g} fps ({report['seconds']:.2f} s); "
        f"windows: first and last {report['window']} frames ({WINDOW_SHARE:.0%})",
        "",
        f"{'metric':<20}{'first 15%':>12}{'last 15%':>12}{'contrast':>12}{'relative':>10}  unit",
    ]
    for name, row in report["metrics"].items():
        rel = "-" if row["relative"] is None else f"{row['relative']:.1%}"
        lines.append(
            f"{name:<20}{_num(row['first']):>12}{_num(row['last']):>12}{_num(row['contrast']):>12}{rel:>10}  {row['unit']}"
        )
    seams = report.get("seams")
    if seams and seams["ratios"]:
        worst = seams["boundaries"][int(np.argmax(seams["ratios"]))]
        lines += [
            "",
            f"seams: {len(seams['ratios'])} boundaries, spike ratio mean {seams['mean']:.2f}, "
            f"max {seams['max']:.2f} at frame {worst} (median motion {seams['baseline']:.3f} levels); "
            f"change at seams / elsewhere {seams['ratio']:.2f}",
        ]
    if report.get("latent_seams"):
        lines.append(
            f"latent seams: change at latent boundaries / elsewhere {report['latent_seams']['ratio']:.2f}"
        )
    return "\n".join(lines)


def _num(x: float) -> str:
    if x == 0 or (1e-3 <= abs(x) < 1e5):
        return f"{x:.4g}" if abs(x) < 1 else f"{x:.2f}"
    return f"{x:.3e}" if math.isfinite(x) else str(x)
