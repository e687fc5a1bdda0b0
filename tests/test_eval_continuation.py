"""Continuation of the start image against the truth on pixels still in view, and window-by-window
comparison of a long video with its true video: known answers on true world clips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from framepack.data.world import PALETTE, World, render_clip
from framepack.data.world_script import SPEEDS, Action, Script
from framepack.eval.continuation import continuation_psnr, in_view_mask, pooled_psnr
from framepack.eval.windows import mean_stats, window_count, window_deviations, window_stats


def _true_clip(direction: str, speed: float, frames: int = 9):
    """A world clip panning one way with moving objects; its frames and camera path (truth)."""
    clip = render_clip(World(21), Script((Action(direction, 2.0, speed),), (300, -40)), 64, 30, frames)
    return clip.frames, np.array([t["camera"] for t in clip.truth])


def test_in_view_mask_of_a_pan_keeps_the_columns_the_start_frame_showed():
    cameras = np.array([[100 + 3 * k, 50] for k in range(9)])  # camera right 3 px per frame
    mask = in_view_mask(cameras, range(1, 9), [0], 32, 48)
    assert mask.shape == (8, 32, 48)
    for k in range(1, 9):  # frame k shows world x up to 3k px beyond frame 0's right edge
        assert mask[k - 1, :, : 48 - 3 * k].all() and not mask[k - 1, :, 48 - 3 * k :].any()
    up = in_view_mask(np.array([[0, 0], [0, -5]]), [1], [0], 32, 32)[0]  # camera up: new rows on top
    assert not up[:5].any() and up[5:].all()
    # frame 2 (world x 4..35) between two seen views (x -16..15 and 24..55): x 16..23 unseen
    both = in_view_mask(np.array([[0, 0], [40, 0], [20, 0]]), [2], [0, 1], 32, 32)[0]
    assert both[:, :12].all() and not both[:, 12:20].any() and both[:, 20:].all()


@pytest.mark.parametrize("speed", list(SPEEDS.values()))  # 1.5, 3 and 5 px per frame
@pytest.mark.parametrize("direction", ["left", "down"])
def test_the_true_clip_continues_itself_exactly_at_every_speed(direction, speed):
    frames, cameras = _true_clip(direction, speed)
    assert continuation_psnr(frames, frames, cameras) == math.inf
    invented = frames.copy()  # new land made up differently: not scored
    mask = in_view_mask(cameras, range(1, 9), [0], 64, 64)
    assert not mask.all()
    invented[1:][~mask] = 255 - invented[1:][~mask]
    assert continuation_psnr(invented, frames, cameras) == math.inf
    off = frames.astype(np.int16)
    off[1:][mask] += np.where(off[1:][mask] > 127, -5, 5)  # every in-view pixel 5 levels off
    assert continuation_psnr(off.astype(np.uint8), frames, cameras) == pytest.approx(
        10 * math.log10(255**2 / 25)
    )


def test_a_picture_that_stands_still_does_not_continue_a_pan():
    frames, cameras = _true_clip("right", SPEEDS["slowly"])
    still = np.repeat(frames[:1], len(frames), axis=0)
    assert continuation_psnr(still, frames, cameras) < 20
    with pytest.raises(ValueError, match="needs 9 frames"):
        continuation_psnr(frames[:5], frames, cameras)


def test_pooled_psnr_weighs_by_error():
    assert pooled_psnr([20.0, 20.0]) == pytest.approx(20.0)
    assert pooled_psnr([10.0, math.inf]) == pytest.approx(10 + 10 * math.log10(2))
    assert pooled_psnr([math.inf, math.inf]) == math.inf
    with pytest.raises(ValueError):
        pooled_psnr([])


def test_window_deviations_known_answers():
    assert window_count(1800, 30) == 10 and window_count(10, 30) == 1 and window_count(360, 30) == 2
    true, _ = _true_clip("right", SPEEDS["steadily"], frames=12)
    fake = true.copy()
    fake[6:] = 128  # the second window: a flat grey, off the palette (nearest colour 124,122,118 is
    # 6 levels away, so use tolerance 4)
    gen_stats, true_stats = window_stats(fake, 2, PALETTE, tol=4), window_stats(true, 2, PALETTE, tol=4)
    dev = window_deviations(gen_stats, true_stats)
    assert dev["palette"][0] == 0 and dev["sharpness"][0] == 0 and dev["histogram"][0] == 0
    assert dev["palette"][1] == pytest.approx(1.0) and dev["sharpness"][1] == pytest.approx(1.0)
    grey_bin = (128 // 32) * 64 + (128 // 32) * 8 + 128 // 32  # 8 bins per channel, joint RGB
    assert dev["histogram"][1] == pytest.approx(1 - true_stats["histogram"][1][grey_bin])
    pooled = mean_stats([gen_stats, true_stats])
    assert pooled["palette"][1] == pytest.approx(0.5 * true_stats["palette"][1])
    with pytest.raises(ValueError, match="windows"):
        window_stats(true[:1], 2, PALETTE)
