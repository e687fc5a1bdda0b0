"""Video files: round trips, metadata, atomic writes, path checks, readable errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import framepack.video as video
from framepack.errors import UserError


def _ramp(frames: int = 6, h: int = 32, w: int = 48) -> np.ndarray:
    """uint8 (F, H, W, 3): flat colours that change per frame (easy for H.264 to keep exact)."""
    levels = np.linspace(20, 230, frames).astype(np.uint8)
    out = np.zeros((frames, h, w, 3), np.uint8)
    out[..., 0] = levels[:, None, None]
    out[..., 1] = 255 - levels[:, None, None]
    out[..., 2] = 128
    return out


def test_round_trip_uint8(tmp_path):
    frames = _ramp()
    path = video.write_video(tmp_path / "a.mp4", frames, 24, crf=10)
    got, fps = video.read_video(path)
    assert fps == 24
    assert got.shape == frames.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - frames).max() <= 3  # yuv420p rounding only


def test_float_pixels_match_uint8(tmp_path):
    frames = _ramp()
    pixels = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1  # (3, F, H, W)
    assert np.array_equal(video.to_uint8_frames(pixels), frames)
    assert np.array_equal(video.to_uint8_frames(pixels[None]), frames)  # (1, 3, F, H, W)
    got, _ = video.read_video(video.write_video(tmp_path / "f.mp4", pixels, 30))
    assert np.abs(got.astype(int) - frames).max() <= 3


def test_odd_size_padded_or_refused(tmp_path):
    frames = _ramp(h=33, w=47)
    got, _ = video.read_video(video.write_video(tmp_path / "odd.mp4", frames, 30))
    assert got.shape[1:3] == (34, 48)
    with pytest.raises(UserError, match="odd"):
        video.write_video(tmp_path / "odd2.mp4", frames, 30, pad_odd=False)
    assert not (tmp_path / "odd2.mp4").exists()


def test_metadata_round_trip(tmp_path):
    settings = {
        "prompts": ["a cat", "un chat qui saute"],
        "seed": 31337,
        "model": "tiny",
        "steps": 25,
        "plan": {"kind": "inverted", "sections": [2, 1, 0]},
        "version": "0.1.0",
    }
    path = video.write_video(tmp_path / "m.mp4", _ramp(), 30, metadata=settings)
    assert video.read_metadata(path) == settings
    # Stored in the container's comment tag, readable by any tool (ffprobe, PyAV).
    import av

    with av.open(str(path)) as container:
        assert json.loads(container.metadata["comment"]) == settings
    assert video.read_metadata(video.write_video(tmp_path / "n.mp4", _ramp(), 30)) == {}


def test_sidecar(tmp_path):
    path = video.write_sidecar(video.sidecar_path(tmp_path / "out.mp4"), {"seed": 1, "path": tmp_path})
    assert path == tmp_path / "out.json"
    assert json.loads(path.read_text()) == {"seed": 1, "path": str(tmp_path)}


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path, monkeypatch):
    path = video.write_video(tmp_path / "keep.mp4", _ramp(), 30, metadata={"v": 1})
    before = path.read_bytes()

    calls = {"n": 0}
    real = video.av.VideoFrame.from_ndarray

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(video.av.VideoFrame, "from_ndarray", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        video.write_video(path, _ramp()[::-1], 30, metadata={"v": 2})
    assert calls["n"] == 3
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]  # no temporary left behind


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(ValueError), video.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise ValueError
    assert target.read_text() == "old"
    with video.atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_read_video_resample_crop_limit(tmp_path):
    frames = _ramp(frames=12)
    path = video.write_video(tmp_path / "r.mp4", frames, 30)
    half, fps = video.read_video(path, fps=15)
    assert fps == 15 and len(half) == 6
    assert np.abs(half.astype(int) - frames[::2]).max() <= 3  # nearest frames: 0, 2, 4...
    double, _ = video.read_video(path, fps=60)
    assert len(double) == 24
    small, _ = video.read_video(path, size=(16, 16), max_frames=5)
    assert small.shape == (5, 16, 16, 3)


def test_read_errors_are_user_errors(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(UserError, match="does not exist"):
        video.read_video(tmp_path / "missing.mp4")
    with pytest.raises(UserError, match=r"junk\.mp4"):
        video.read_video(junk)
    with pytest.raises(UserError, match=r"junk\.mp4"):
        video.read_metadata(junk)
    with pytest.raises(UserError, match="as an image"):
        video.read_image(junk)
    with pytest.raises(UserError, match="directory"):
        video.read_image(tmp_path)


def test_read_image_and_crop(tmp_path):
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[:, :10] = (255, 0, 0, 255)  # left half opaque red, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "i.png")
    image = video.read_image(tmp_path / "i.png")
    assert image.shape == (10, 20, 3)
    assert tuple(image[0, 0]) == (255, 0, 0) and tuple(image[0, -1]) == (255, 255, 255)
    crop = video.resize_center_crop(image, 10, 10)  # keeps the middle, where red meets white
    assert crop.shape == (10, 10, 3)
    assert crop[:, 0, 1].max() < 40 and crop[:, -1, 1].min() > 215
    assert video.resize_center_crop(image, 20, 20).shape == (20, 20, 3)


def official_resize_and_center_crop(image: np.ndarray, target_width: int, target_height: int) -> np.ndarray:
    """lllyasviel/FramePack diffusers_helper/utils.py `resize_and_center_crop`, restated."""
    if target_height == image.shape[0] and target_width == image.shape[1]:
        return image
    pil_image = Image.fromarray(image)
    original_width, original_height = pil_image.size
    scale_factor = max(target_width / original_width, target_height / original_height)
    resized_width = round(original_width * scale_factor)
    resized_height = round(original_height * scale_factor)
    resized_image = pil_image.resize((resized_width, resized_height), Image.LANCZOS)
    left = (resized_width - target_width) / 2
    top = (resized_height - target_height) / 2
    right = (resized_width + target_width) / 2
    bottom = (resized_height + target_height) / 2
    return np.array(resized_image.crop((left, top, right, bottom)))


def test_resize_center_crop_is_the_official_crop():
    """Pixel for pixel the demo's crop on 308 sizes.

    The demo's fractional box is rounded half to even by PIL; flooring the offset (our old
    formula) shifts the crop by one pixel whenever a margin is 3 mod 4: 72 of these sizes.
    """
    rng = np.random.default_rng(0)
    sizes = floor_differs = 0
    for src_h in range(17, 50, 3):
        for src_w in range(16, 61, 7):
            for height, width in ((16, 16), (16, 32), (32, 16), (24, 40)):
                image = rng.integers(0, 256, (src_h, src_w, 3), dtype=np.uint8)
                expected = official_resize_and_center_crop(image, width, height)
                ours = video.resize_center_crop(image, height, width)
                assert np.array_equal(ours, expected), (src_h, src_w, height, width)
                scale = max(height / src_h, width / src_w)
                new_h, new_w = round(src_h * scale), round(src_w * scale)
                resized = np.array(Image.fromarray(image).resize((new_w, new_h), Image.LANCZOS))
                top, left = (new_h - height) // 2, (new_w - width) // 2
                floored = resized[top : top + height, left : left + width]
                floor_differs += not np.array_equal(floored, expected)
                sizes += 1
    assert (sizes, floor_differs) == (308, 72)


def test_resize_center_crop_keeps_odd_sizes():
    """An odd side keeps its size; the demo's box (1.5, 6.5) rounds to (2, 6) and loses a pixel."""
    image = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert np.array_equal(video.resize_center_crop(image, 8, 5), image[:, 2:7])
    assert official_resize_and_center_crop(image, 5, 8).shape == (8, 4, 3)


def test_check_output_path(tmp_path):
    existing = tmp_path / "a.mp4"
    existing.write_bytes(b"x")
    assert video.check_output_path(tmp_path / "b.mp4") == tmp_path / "b.mp4"
    assert video.check_output_path(existing, overwrite=True) == existing
    with pytest.raises(UserError, match="--overwrite"):
        video.check_output_path(existing)
    with pytest.raises(UserError, match="does not exist"):
        video.check_output_path(tmp_path / "nodir" / "a.mp4")
    with pytest.raises(UserError, match="is a directory"):
        video.check_output_path(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        video.check_output_path(existing / "a.mp4")  # parent is a file
    assert existing.read_bytes() == b"x"


def test_read_image_modes(tmp_path, monkeypatch):
    from PIL import Image

    from framepack.video import read_image

    gray16 = np.full((8, 8), 32768, dtype=np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    assert (
        read_image(tmp_path / "g16.png").tolist() == np.full((8, 8, 3), 128).tolist()
    )  # not clipped to white
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent: composited over white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert (read_image(tmp_path / "a.png") == 255).all()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    assert read_image(tmp_path / "c.jpg")[0, 0, 0] > 200  # CMYK red -> RGB red
    frames = [Image.new("RGB", (8, 8), c) for c in ((0, 0, 255), (255, 0, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert read_image(tmp_path / "anim.gif")[0, 0, 2] > 200  # the first frame
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 8x8 = 64 > 2 * 10: a "bomb"
    with pytest.raises(UserError, match="megapixels"):
        read_image(tmp_path / "a.png")


def test_same_frames_same_file(tmp_path):
    """x264 reads the padding of the frames it is given: with libswscale's uninitialised padding,
    1 write in about 8 of these demo frames gave another file (decoded up to 30 levels apart)."""
    from framepack.options import GenerationOptions
    from framepack.pipeline import FramePackPipeline

    options = GenerationOptions(seconds=1.2, steps=2, seed=5, out=str(tmp_path / "demo.mp4"))
    FramePackPipeline.from_pretrained("demo").generate(options, progress=False)
    frames, _ = video.read_video(tmp_path / "demo.mp4")
    first = video.write_video(tmp_path / "a.mp4", frames, 30, metadata={"seed": 1}).read_bytes()
    for _ in range(16):
        assert video.write_video(tmp_path / "b.mp4", frames, 30, metadata={"seed": 1}).read_bytes() == first
