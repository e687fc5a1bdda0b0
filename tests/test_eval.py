"""Drift metrics: known answers, start-end contrast, seam spikes, helpers, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from framepack.cli import main
from framepack.eval import (
    drift_report,
    format_report,
    frame_metrics,
    histogram_distance,
    luminance,
    motion,
    palette_share,
    psnr,
    saturation,
    seam_spikes,
    section_boundaries,
    sharpness,
    start_end_contrast,
)
from framepack.video import write_video


def _texture(h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 (H, W, 3) random texture."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    x = image.astype(np.float64)
    for axis in (0, 1):
        x = sum(np.roll(x, s, axis=axis) for s in range(-radius, radius + 1)) / (2 * radius + 1)
    return x.round().astype(np.uint8)


def _scrolling(frames: int, jump_at: int | None = None, jump: int = 40) -> np.ndarray:
    """Smooth colour waves scrolling 1 px per frame; at `jump_at` they jump by `jump` px instead."""
    shifts = np.arange(frames)
    if jump_at is not None:
        shifts[jump_at:] += jump - 1
    x = shifts[:, None] + np.arange(48)[None]  # (F, W) texture coordinate
    waves = [
        128 + 100 * np.sin(2 * np.pi * x / period + phase) for period, phase in ((96, 0), (80, 1), (120, 2))
    ]
    rows = np.stack(waves, axis=-1)  # (F, W, 3)
    return np.broadcast_to(rows[:, None], (frames, 32, 48, 3)).round().astype(np.uint8)


# ---------------------------------------------------------------------------- known answers


def test_sharpness_checkerboard_and_blur():
    board = ((np.indices((16, 16)).sum(0) % 2) * 255).astype(np.uint8)
    frames = np.repeat(board[None, :, :, None], 3, axis=3)  # (1, 16, 16, 3) black/white
    # Laplacian is -4L on white and +4L on black pixels: variance (4L)^2 with L = 255.
    assert sharpness(frames)[0] == pytest.approx(16 * 255**2, rel=1e-4)
    sharp = _texture()
    blurred = [_box_blur(sharp, r) for r in (1, 2, 3)]
    values = sharpness(np.stack([sharp, *blurred]))
    assert np.all(np.diff(values) < 0)  # more blur, less sharpness
    assert values[-1] < 0.1 * values[0]


def test_colour_statistics_known_values():
    red = np.full((1, 4, 4, 3), (255, 0, 0), np.uint8)
    grey = np.full((1, 4, 4, 3), (100, 100, 100), np.uint8)
    black = np.zeros((1, 4, 4, 3), np.uint8)
    frames = np.concatenate([red, grey, black])
    assert luminance(frames) == pytest.approx([0.299 * 255, 100, 0], rel=1e-5)
    assert saturation(frames) == pytest.approx([1, 0, 0])
    assert histogram_distance(frames) == pytest.approx([0, 1, 1])  # no colour in common with red
    half = red.copy()
    half[:, :2] = 0  # half the pixels change bin
    assert histogram_distance(np.concatenate([red, half])) == pytest.approx([0, 0.5])


def test_motion_known_values_across_chunks():
    levels = (np.arange(70) % 2) * 10  # alternating 0 / 10: every difference is 10
    frames = np.broadcast_to(levels[:, None, None, None], (70, 4, 4, 3)).astype(np.uint8)
    assert motion(frames) == pytest.approx(np.full(69, 10.0))
    assert len(motion(frames[:1])) == 0


def test_chunked_metrics_equal_per_frame():
    frames = np.stack([_texture(8, 8, seed=i) for i in range(70)])  # more than one chunk
    whole = frame_metrics(frames)
    for name in ("sharpness", "luminance", "saturation"):
        single = np.concatenate([frame_metrics(frames[i : i + 1])[name] for i in range(70)])
        assert np.allclose(whole[name], single)
    naive = np.abs(np.diff(frames.astype(float), axis=0)).mean(axis=(1, 2, 3))
    assert np.allclose(whole["motion"], naive)


def test_constant_video_has_no_motion_and_no_contrast():
    frames = np.broadcast_to(_texture(16, 16), (20, 16, 16, 3))
    report = drift_report(frames, fps=30)
    for name, row in report["metrics"].items():
        assert row["contrast"] == pytest.approx(0, abs=1e-9), name
    assert report["metrics"]["motion"]["first"] == 0
    assert report["seams"] is None


def test_fade_to_black_shows_luminance_contrast():
    gains = np.linspace(1, 0, 40)
    frames = (gains[:, None, None, None] * np.full((1, 8, 8, 3), 200.0)).round().astype(np.uint8)
    report = drift_report(frames, fps=30)
    lum = report["metrics"]["luminance"]
    n = report["window"]
    assert n == 6  # round(0.15 * 40)
    assert lum["first"] == pytest.approx(200 * gains[:n].mean(), abs=0.5)
    assert lum["last"] == pytest.approx(200 * gains[-n:].mean(), abs=0.5)
    assert lum["contrast"] > 150 and lum["relative"] > 0.85
    assert report["metrics"]["sharpness"]["contrast"] == pytest.approx(0, abs=1e-6)  # flat frames


def test_blurring_video_shows_sharpness_contrast():
    sharp = _texture()
    frames = np.stack([sharp] * 10 + [_box_blur(sharp, 2)] * 10)
    row = drift_report(frames, fps=30)["metrics"]["sharpness"]
    assert row["last"] < row["first"] and row["relative"] > 0.5


def test_seam_spike_detected_at_planted_discontinuity():
    frames = _scrolling(48, jump_at=24)
    report = drift_report(frames, fps=30, section_frames=8)
    seams = report["seams"]
    assert seams["boundaries"] == [8, 16, 24, 32, 40]
    ratios = dict(zip(seams["boundaries"], seams["ratios"]))
    assert ratios[24] > 5 and ratios[24] == seams["max"]
    assert all(0.5 < r < 2 for b, r in ratios.items() if b != 24)
    assert "max" in format_report(report) and "at frame 24" in format_report(report)
    smooth = drift_report(_scrolling(48), fps=30, section_frames=8)["seams"]
    assert smooth["max"] < 2


def test_seam_spikes_explicit_and_static():
    assert seam_spikes(np.zeros(10), [5])["ratios"] == [1.0]  # static video: no spike
    spikes = seam_spikes(np.array([1.0, 1, 1, 9, 1, 1]), [4, 99])
    assert spikes["boundaries"] == [4] and spikes["ratios"][0] == pytest.approx(9.01 / 1.01)
    assert section_boundaries(20, 8) == [8, 16]
    assert section_boundaries(20, 8, offset=1) == [9, 17]
    with pytest.raises(ValueError, match="section_frames"):
        section_boundaries(20, 0)


def test_start_end_contrast_known_values():
    row = start_end_contrast(np.arange(20.0))
    assert row["window"] == 3
    assert (row["first"], row["last"], row["contrast"]) == (1.0, 18.0, 17.0)
    assert row["relative"] == 17.0
    assert start_end_contrast([0.0, 1.0])["relative"] is None


@settings(deadline=None)  # shared CI machines: timing is not what this tests
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200))
def test_contrast_symmetric_under_reversal(values):
    a, b = start_end_contrast(values), start_end_contrast(values[::-1])
    assert a["contrast"] == pytest.approx(b["contrast"], rel=1e-9, abs=1e-6)
    assert a["contrast"] >= 0


def test_float_pixels_accepted():
    frames = np.stack([_texture(8, 8, seed=i) for i in range(4)])
    pixels = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1
    assert np.allclose(frame_metrics(pixels)["sharpness"], frame_metrics(frames)["sharpness"])


# ---------------------------------------------------------------------------- helpers


def test_psnr():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = np.ones_like(a)
    assert psnr(a, b) == pytest.approx(20 * np.log10(255))  # MSE 1
    assert psnr(a, a) == float("inf")
    c = b.copy()
    c[:, :2] = 0  # top half matches exactly
    mask = np.zeros((4, 4, 1), bool)
    mask[2:] = True
    assert psnr(a, c, mask) == pytest.approx(20 * np.log10(255))
    x = torch.zeros(3, 2, 4, 4)
    assert psnr(x, x + 0.02) == pytest.approx(10 * np.log10(4 / 0.02**2), rel=1e-4)  # peak 2 for [-1, 1]
    with pytest.raises(ValueError, match="shapes"):
        psnr(a, a[:1])


def test_palette_share():
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    frames[:, :, :2] = (250, 5, 5)  # half near red
    frames[:, :, 2:] = (0, 0, 200)  # half blue
    assert palette_share(frames, [(255, 0, 0)], tol=8) == 0.5
    assert palette_share(frames, [(255, 0, 0)], tol=4) == 0.0
    assert palette_share(frames, [(255, 0, 0), (0, 0, 200)], tol=8) == 1.0


# ---------------------------------------------------------------------------- CLI


def test_cli_drift_table_json_and_metadata(tmp_path, capsys):
    path = write_video(
        tmp_path / "s.mp4", _scrolling(48, jump_at=24), 30, crf=12, metadata={"section_frames": 8}
    )
    assert main(["eval", "drift", str(path)]) == 0
    table = capsys.readouterr().out
    assert "sharpness" in table and "relative" in table and "at frame 24" in table
    assert main(["eval", "drift", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["seams"]["section_frames"] == 8  # read from the metadata
    assert report["seams"]["max"] == report["seams"]["ratios"][2] > 3
    assert main(["eval", "drift", str(path), "--json", "--section-frames", "12"]) == 0
    assert json.loads(capsys.readouterr().out)["seams"]["boundaries"] == [12, 24, 36]


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["eval", "drift", str(tmp_path / "missing.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err
    junk = tmp_path / "junk.mp4"
    junk.write_text("junk")
    assert main(["eval", "drift", str(junk)]) == 2
    one = write_video(tmp_path / "one.mp4", np.zeros((1, 8, 8, 3), np.uint8), 30)
    assert main(["eval", "drift", str(one)]) == 2
    assert "at least 2 frames" in capsys.readouterr().err
    assert main(["eval", "drift", str(one), "--section-frames", "0"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["eval"])  # the evaluation name is required
    assert exit_info.value.code == 2
