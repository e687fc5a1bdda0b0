"""A loss curve drawn with PIL (no matplotlib): raw losses in grey, a running mean in blue."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from framepack.disk import atomic_path


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing running mean over `window` values."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_loss(
    steps: Sequence[int], losses: Sequence[float], path: Path, size: tuple[int, int] = (640, 360)
) -> None:
    """Write a PNG of loss against step (log-scale y) to `path` (atomically)."""
    width, height = size
    left, right, top, bottom = 60, 10, 20, 30
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    pairs = [(s, v) for s, v in zip(steps, losses) if math.isfinite(v) and v > 0]
    draw.text((left, 4), "training loss (log scale)", fill="black")
    if len(pairs) >= 2:
        xs, ys = zip(*pairs)
        logs = [math.log10(v) for v in ys]
        lo, hi = min(logs), max(logs)
        hi = hi if hi > lo else lo + 1.0
        x0, x1 = xs[0], xs[-1] if xs[-1] > xs[0] else xs[0] + 1

        def point(s: float, ly: float) -> tuple[float, float]:
            px = left + (s - x0) / (x1 - x0) * (width - left - right)
            py = top + (hi - ly) / (hi - lo) * (height - top - bottom)
            return px, py

        draw.line([point(s, ly) for s, ly in zip(xs, logs)], fill=(190, 190, 190), width=1)
        mean = smooth(list(ys), max(1, len(ys) // 50))
        draw.line([point(s, math.log10(v)) for s, v in zip(xs, mean)], fill=(30, 90, 200), width=2)
        for ly in (lo, hi):
            draw.text((4, point(x0, ly)[1] - 6), f"{10**ly:.3g}", fill="black")
        draw.text((left, height - bottom + 8), f"step {x0}", fill="black")
        draw.text((width - right - 90, height - bottom + 8), f"step {x1}", fill="black")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
