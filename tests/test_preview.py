"""`decode_preview`: the step callback's x0 estimate as a picture, checked through the lossless
pixel codec (the exact frames come back), and the queue worker's PNG of it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from framepack.codecs import PixelCodec
from framepack.preview import decode_preview
from framepack.queue.worker import write_preview

CODEC = PixelCodec(space_factor=2, time_factor=2)
H, W = 4, 6


def clip(levels: list[int]) -> torch.Tensor:
    """Latents of frames of one grey level each (0..255), through the lossless codec."""
    frames = torch.tensor(levels, dtype=torch.float32) / 127.5 - 1  # exactly the uint8 levels
    pixels = frames.view(1, 1, -1, 1, 1).expand(1, 3, len(levels), H, W)  # (1, 3, F, H, W)
    return CODEC.encode(pixels.contiguous())  # (1, 24, T, H/2, W/2)


def test_the_frames_side_by_side_every_kth():
    levels = [0, 10, 20, 30, 40, 50, 60, 70, 255]  # 9 frames = 1 + 2 * 4: 5 latents
    x0 = clip(levels)
    assert x0.shape == (1, CODEC.latent_channels, 5, H // 2, W // 2)
    strip = decode_preview(CODEC, x0)
    assert strip.dtype == np.uint8 and strip.shape == (H, 5 * W, 3)  # ceil(9 / 8) = 2: frames 0, 2, ..., 8
    shown = [int(strip[0, i * W, 0]) for i in range(5)]
    assert shown == [0, 20, 40, 60, 255]
    assert np.all(strip.reshape(H, 5, W, 3) == np.array(shown, dtype=np.uint8)[None, :, None, None])
    every = decode_preview(CODEC, x0, max_frames=9)
    assert [int(every[0, i * W, 0]) for i in range(9)] == levels
    assert decode_preview(CODEC, x0, max_frames=1).shape == (H, W, 3)


def test_an_overshooting_estimate_is_clamped():
    x0 = clip([255, 255, 255]) * 3  # an estimate far outside [-1, 1], as early steps give
    x0[:, :, 1:] *= -1
    strip = decode_preview(CODEC, x0, max_frames=3)
    assert [int(strip[0, i * W, 0]) for i in range(3)] == [255, 0, 0]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"one clip of latents \(1, C, n, h, w\), got \(2, 24, 2, 2, 3\)"):
        decode_preview(CODEC, torch.zeros(2, 24, 2, 2, 3))
    with pytest.raises(ValueError, match="max_frames must be >= 1"):
        decode_preview(CODEC, clip([0]), max_frames=0)


def test_the_worker_writes_the_decoded_preview(tmp_path):
    pipe = SimpleNamespace(components=SimpleNamespace(codec=CODEC, device=torch.device("cpu")))
    x0 = clip([0, 100, 200])
    path = tmp_path / "job.preview" / "latest.png"
    write_preview(pipe, x0, path)
    with Image.open(path) as image:
        assert np.array_equal(np.asarray(image), decode_preview(CODEC, x0))
    assert [p.name for p in path.parent.iterdir()] == ["latest.png"]  # no temporary file left
