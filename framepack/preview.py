"""Previews of a section while it is sampled: the step callback's x0 estimate, decoded.

The pipeline's step callback receives a `StepInfo` after every sampler step; its `x0`
(1, C, n, h, w) is the sampler's current estimate of the section's clean latents.
`decode_preview` turns it into one picture, the section's frames side by side, which is what
the web UI's queue worker shows:

    from framepack.preview import decode_preview

    def show(info):  # framepack.pipeline.StepInfo
        strip = decode_preview(pipe.components.codec, info.x0, device=pipe.components.device)
        PIL.Image.fromarray(strip).save(f"preview_{info.section.step}_{info.step}.png")

    pipe.generate(options, callback=show)

Decoding costs about as much as decoding the section's frames once, so callers throttle it
(the worker decodes at most once a second, less often when decoding is slow).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor


def decode_preview(
    codec: Any, x0: Tensor, *, device: torch.device | str | None = None, max_frames: int = 8
) -> np.ndarray:
    """The estimate `x0` (1, C, n, h, w) decoded to a uint8 RGB strip (H, W * k, 3).

    codec: any `framepack.codecs.Codec` (the pipeline's is `pipe.components.codec`).
    device: where to decode (default: x0's device); x0 is decoded in float32.
    max_frames: the strip shows k <= max_frames of the decoded frames, evenly strided from the
        first (every ceil(F / max_frames)-th of the F frames).
    """
    if x0.ndim != 5 or x0.shape[0] != 1:
        raise ValueError(f"x0 must be one clip of latents (1, C, n, h, w), got {tuple(x0.shape)}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    with torch.no_grad():
        pixels = codec.decode(x0.to(device or x0.device, torch.float32))  # (1, 3, F, H, W) in [-1, 1]
    pixels = pixels.float().clamp(-1, 1).cpu()
    frames = ((pixels[0] + 1) * 127.5).round().byte().permute(1, 2, 3, 0)  # (F, H, W, 3)
    pick = frames[:: max(1, math.ceil(frames.shape[0] / max_frames))]  # (k, H, W, 3)
    return torch.cat(list(pick), dim=1).numpy()  # (H, W * k, 3)
