"""Evaluation: weight-free per-frame metrics and drift measures (SPEC.md section 6).

`metrics` holds per-frame metrics (sharpness, luminance, saturation, histogram distance,
motion) and helpers (psnr, palette_share); `drift` turns them into the paper's start-end
contrast and seam spike ratios (`drift_report`). Against known motion and known frames:
`camera` (does the picture move as prompted, on pairs and on consecutive frames), `continuation`
(frames against the true clip on the pixels still in view), `windows` (a long video against its
true video, window by window), `revisit`, `codec` (a codec's held-out card).
"""

from framepack.eval.drift import (
    drift_report,
    format_report,
    seam_spikes,
    section_boundaries,
    start_end_contrast,
)
from framepack.eval.metrics import (
    color_histograms,
    frame_metrics,
    histogram_distance,
    luminance,
    motion,
    palette_share,
    psnr,
    saturation,
    sharpness,
)

__all__ = [
    "color_histograms",
    "drift_report",
    "format_report",
    "frame_metrics",
    "histogram_distance",
    "luminance",
    "motion",
    "palette_share",
    "psnr",
    "saturation",
    "seam_spikes",
    "section_boundaries",
    "sharpness",
    "start_end_contrast",
]
