"""The video-folder dataset: indexing, skipping bad files, time-based fps resampling, cropping."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from framepack.data import videos as videos_module
from framepack.data.videos import VideoFolder

STEP = 6  # grey level per source frame: frame k is a flat grey of level STEP * k


def _write(path: Path, frames: np.ndarray, fps: int, codec: str = "libx264", **options: str) -> Path:
    """Encode frames uint8 (F, H, W, 3) with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = options
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _ramp(num_frames: int, height: int, width: int) -> np.ndarray:
    levels = (STEP * np.arange(num_frames)).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()


def _source_index(pixels) -> np.ndarray:
    """Source frame number of each clip frame of a ramp video, from its grey level."""
    grey = (pixels.numpy() + 1) * 127.5  # (3, F, H, W)
    return np.round(grey.mean(axis=(0, 2, 3)) / STEP).astype(int)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    # A ramp at 10 fps with a keyframe every 5 frames (so seeking is exercised), lossless.
    _write(root / "ramp.mp4", _ramp(40, 32, 48), 10, g="5", crf="0")
    (root / "ramp.txt").write_text("a grey ramp\n")
    rng = np.random.default_rng(0)
    _write(root / "noise.webm", rng.integers(0, 255, (40, 40, 40, 3), dtype=np.uint8), 25, "libvpx-vp9")
    (root / "sub").mkdir()
    _write(root / "sub" / "wide.mkv", _ramp(120, 36, 64), 60)
    _write(root / "clip.mov", _ramp(20, 24, 24), 12, "mpeg4")
    _write(root / "short.mp4", _ramp(3, 16, 16), 10)
    (root / "corrupt.mp4").write_bytes(rng.integers(0, 255, 4096, dtype=np.uint8).tobytes())
    good = (root / "ramp.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 2])  # MP4 index (moov) lost
    (root / "notes.dat").write_bytes(b"not a video")
    return root


def test_index_keeps_good_files_and_counts_skips(folder, caplog):
    with caplog.at_level(logging.WARNING):
        data = VideoFolder(folder, num_frames=8, size=(16, 24), fps=5)
    names = sorted(v.path.name for v in data.videos)
    assert names == ["clip.mov", "noise.webm", "ramp.mp4", "wide.mkv"]
    skipped = {s.path.name: s.reason for s in data.skipped}
    assert skipped["short.mp4"] == "too short"
    assert skipped["corrupt.mp4"] == "unreadable"
    assert skipped["truncated.mp4"] == "unreadable"
    assert "notes.dat" not in skipped and "ramp.txt" not in skipped  # not videos: ignored
    assert sum(data.skip_counts.values()) == 3 == len(data.skipped)
    assert "short.mp4" in caplog.text and "corrupt.mp4" in caplog.text
    info = {v.path.name: v for v in data.videos}
    assert info["ramp.mp4"].fps == pytest.approx(10) and info["ramp.mp4"].span == pytest.approx(3.9, abs=0.01)
    assert info["wide.mkv"].fps == pytest.approx(60) and (
        info["wide.mkv"].width,
        info["wide.mkv"].height,
    ) == (64, 36)
    assert info["noise.webm"].fps == pytest.approx(25)


def test_items_have_model_shape_range_and_captions(folder):
    data = VideoFolder(folder, num_frames=8, size=(16, 24), fps=5, clips_per_video=2, default_caption="video")
    assert len(data) == 2 * len(data.videos)
    for i in range(len(data)):
        item = data[i]
        assert item["pixels"].shape == (3, 8, 16, 24)
        assert item["pixels"].min() >= -1 and item["pixels"].max() <= 1
        expected = "a grey ramp" if item["path"].endswith("ramp.mp4") else "video"
        assert item["caption"] == expected
    with pytest.raises(IndexError):
        data[len(data)]


def test_items_are_deterministic(folder):
    a = VideoFolder(folder, num_frames=6, size=16, fps=8, clips_per_video=3, seed=7)
    b = VideoFolder(folder, num_frames=6, size=16, fps=8, clips_per_video=3, seed=7)
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert x["path"] == y["path"] and x["start"] == y["start"]
        assert (x["pixels"] == y["pixels"]).all()
    c = VideoFolder(folder, num_frames=6, size=16, fps=8, clips_per_video=3, seed=8)
    assert [a.start_time(i) for i in range(len(a))] != [c.start_time(i) for i in range(len(c))]


@pytest.mark.parametrize("fps", [5, 10, 20, 7.5])
def test_frames_are_resampled_by_time(folder, fps):
    data = VideoFolder(folder, num_frames=12, size=16, fps=fps, clips_per_video=6, seed=1)
    ramp = [i for i in range(len(data)) if data.videos[i % len(data.videos)].path.name == "ramp.mp4"]
    starts = []
    for i in ramp:
        item = data[i]
        times = item["start"] + np.arange(12) / fps  # seconds from the first frame
        got = _source_index(item["pixels"])
        # Each frame is the source frame (10 fps) nearest to its time.
        assert (np.abs(got - times * 10) <= 0.5 + 1e-6).all(), (fps, item["start"], got)
        starts.append(item["start"])
    assert max(starts) > 0.5  # some clips start late in the file (the seek path)


def test_resize_covers_then_centre_crops(tmp_path):
    frame = np.zeros((20, 60, 3), np.uint8)
    frame[:, :20] = (255, 0, 0)
    frame[:, 20:40] = (0, 255, 0)
    frame[:, 40:] = (0, 0, 255)
    _write(tmp_path / "bands.mp4", np.stack([frame] * 10), 10, crf="0")
    item = VideoFolder(tmp_path, num_frames=2, size=16, fps=10)[0]
    rgb = (item["pixels"][:, 0] + 1) * 127.5  # (3, 16, 16)
    # Height 20 -> 16 (scale 0.8), width 60 -> 48, centre 16 columns: the green band.
    assert rgb.shape == (3, 16, 16)
    assert rgb[1].mean() > 200 and rgb[0].mean() < 40 and rgb[2].mean() < 40


def test_a_file_failing_at_read_time_is_skipped_not_fatal(folder, monkeypatch):
    data = VideoFolder(folder, num_frames=4, size=16, fps=5)
    real = videos_module.read_clip

    def flaky(video, *args):
        if video.path.name == "clip.mov":
            raise av.error.InvalidDataError(1, "damaged")
        return real(video, *args)

    monkeypatch.setattr(videos_module, "read_clip", flaky)
    bad = next(i for i, v in enumerate(data.videos) if v.path.name == "clip.mov")
    item = data[bad]
    assert not item["path"].endswith("clip.mov")
    assert data.skipped[-1].path.name == "clip.mov" and data.skipped[-1].reason == "unreadable"


def test_a_truncated_file_that_indexes_fine_is_skipped_once_at_read_time(tmp_path):
    full = _write(tmp_path / "full.mkv", _ramp(60, 32, 32), 30)
    data = full.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) * 4 // 10])  # header still claims 2 s
    full.rename(tmp_path / "good.mkv")
    dataset = VideoFolder(tmp_path, num_frames=40, size=16, fps=30, clips_per_video=3)
    assert len(dataset.videos) == 2 and not dataset.skipped
    paths = {Path(dataset[i]["path"]).name for i in range(len(dataset))}
    assert paths == {"good.mkv"}
    assert [s.path.name for s in dataset.skipped] == ["cut.mkv"]


def test_too_long_clips_skip_everything(folder):
    data = VideoFolder(folder, num_frames=1000, size=16, fps=30)
    assert len(data) == 0 and data.skip_counts["too short"] >= 4


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="root"):
        VideoFolder(tmp_path / "missing", num_frames=4, size=16, fps=5)
    with pytest.raises(ValueError, match="num_frames"):
        VideoFolder(tmp_path, num_frames=0, size=16, fps=5)
