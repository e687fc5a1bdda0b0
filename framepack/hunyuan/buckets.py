"""Resolution buckets and image preparation, as in the official FramePack demo.

The released models were trained at about 640x640 pixels of area in a fixed list of aspect
ratios ("buckets"). An input image is mapped to the bucket whose aspect ratio is nearest, resized
so that it covers the bucket (Lanczos) and centre-cropped (`framepack.video.resize_center_crop`,
the demo's `resize_and_center_crop`).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from framepack.video import resize_center_crop

# (height, width) pairs of the official 640 bucket list (lllyasviel/FramePack bucket_tools.py).
OFFICIAL_BUCKETS_640: tuple[tuple[int, int], ...] = (
    (416, 960),
    (448, 864),
    (480, 832),
    (512, 768),
    (544, 704),
    (576, 672),
    (608, 640),
    (640, 608),
    (672, 576),
    (704, 544),
    (768, 512),
    (832, 480),
    (864, 448),
    (960, 416),
)

# Sides are multiples of 16 pixels: 8x VAE downsampling, then the (1, 2, 2) patch kernel.
BUCKET_MULTIPLE = 16


def buckets(resolution: int = 640) -> tuple[tuple[int, int], ...]:
    """The (height, width) buckets for a bucket size.

    640 is the official list. Other sizes scale that list by `resolution / 640` and round each
    side to a multiple of 16 (our extension; the official demo only has 640).
    """
    if resolution <= 0 or resolution % BUCKET_MULTIPLE:
        raise ValueError(f"resolution must be a positive multiple of {BUCKET_MULTIPLE}, got {resolution}")
    if resolution == 640:
        return OFFICIAL_BUCKETS_640
    scale = resolution / 640
    out = []
    for h, w in OFFICIAL_BUCKETS_640:
        sh = max(BUCKET_MULTIPLE, round(h * scale / BUCKET_MULTIPLE) * BUCKET_MULTIPLE)
        sw = max(BUCKET_MULTIPLE, round(w * scale / BUCKET_MULTIPLE) * BUCKET_MULTIPLE)
        if (sh, sw) not in out:
            out.append((sh, sw))
    return tuple(out)


def nearest_bucket(height: int, width: int, resolution: int = 640) -> tuple[int, int]:
    """The bucket (height, width) whose aspect ratio is nearest to `height / width`.

    Same rule as the official demo: minimise |h * bucket_w - w * bucket_h|; ties go to the
    later bucket in the list.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    best, best_metric = None, float("inf")
    for bh, bw in buckets(resolution):
        metric = abs(height * bw - width * bh)
        if metric <= best_metric:
            best, best_metric = (bh, bw), metric
    assert best is not None
    return best


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1] (x / 127.5 - 1, as the official demo)."""
    return (
        torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
        .float()
        .div(127.5)
        .sub(1)
        .permute(2, 0, 1)[None]
    )


def prepare_image(
    image: np.ndarray | Image.Image, resolution: int = 640
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Bucket, resize and crop an input image.

    Returns pixels (1, 3, H, W) in [-1, 1] and the bucket (H, W).
    """
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {array.shape} {array.dtype}")
    bucket = nearest_bucket(array.shape[0], array.shape[1], resolution)
    return image_to_tensor(resize_center_crop(array, *bucket)), bucket
