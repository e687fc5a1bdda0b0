"""Video and image files: PyAV reading and writing, settings metadata, atomic writes.

Every file this module writes is written atomically: the bytes go to a hidden temporary file in
the destination directory, which is flushed to disk and then renamed over the destination with
`os.replace`. A crash or an exception midway never leaves a half-written file, and a previous
version of the file stays intact until the new one is complete.

Generated videos are H.264 (libx264, yuv420p) MP4 files. The settings that made a video
(prompts, seed, model, plan, steps, version...) are stored as one JSON object in the container's
`comment` tag, so they travel with the file; `read_metadata` reads them back. `write_sidecar`
writes the same settings as a readable JSON file next to the video.

Frames are `uint8 (F, H, W, 3)` arrays (numpy or torch) or pipeline pixels, float
`(3, F, H, W)` or `(1, 3, F, H, W)` in `[-1, 1]` (see docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from fractions import Fraction
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from framepack.disk import atomic_path as atomic_path  # re-exported: writers import it from here
from framepack.disk import check_names
from framepack.errors import UserError

# Container tag that holds the settings JSON (MP4 writes it as the `©cmt` atom).
METADATA_TAG = "comment"


# --------------------------------------------------------------------------------------------
# Atomic writes and output paths
# --------------------------------------------------------------------------------------------


def remove_litter(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files `atomic_path` leaves beside `path` when a process is killed
    mid-write (`.NAME.<hex>.tmp<suffix>`); other files are never touched. Returns what it removed."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp*"):
        if tmp.is_file() and re.fullmatch(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp.*", tmp.name):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")  # containers that take our H.264 stream and metadata


def check_output_path(
    path: str | os.PathLike,
    overwrite: bool = False,
    suffixes: tuple[str, ...] | None = None,
    flag: str = "--out",
) -> Path:
    """Check that a file can be written at `path` before any work starts; return it as a Path.

    Raises UserError (and touches nothing) if the file exists and `overwrite` is false, if the
    path is a directory, if its name does not end in one of `suffixes`, or if its directory does
    not exist or cannot take a new file (probed with a hidden temporary file, removed at once).
    """
    path = Path(path)
    check_names([path], flag)
    if suffixes and path.suffix.lower() not in suffixes and not path.is_dir():
        raise UserError(
            f"output {path} must end in {', '.join(suffixes)}; e.g. {path.with_suffix(suffixes[0])}"
        )
    if path.is_dir():
        raise UserError(f"output path {path} is a directory; give a file name such as {path / 'out.mp4'}")
    if path.exists() and not overwrite:
        raise UserError(f"output file {path} already exists; pass --overwrite or choose another name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output directory {parent} does not exist; create it first (mkdir -p {parent})")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"output directory {parent} is not writable; choose another location")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"output file {path} is read-only; choose another name or change its permissions")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".framepack-probe-"):
            pass
    except OSError as err:
        raise UserError(
            f"cannot write in {parent} ({err.strerror or err}); choose another location"
        ) from None
    return path


# --------------------------------------------------------------------------------------------
# Settings: JSON in the container and in a sidecar
# --------------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    """Turn common non-JSON values (paths, numpy/torch scalars, dataclasses) into JSON ones."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | torch.Tensor):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    # Never lose a finished render over one odd setting: keep its text form.
    return str(value)


def settings_json(settings: Mapping[str, Any], *, indent: int | None = None) -> str:
    """Serialise settings to JSON (UTF-8 text, keys in insertion order)."""
    return json.dumps(dict(settings), default=_json_default, ensure_ascii=False, indent=indent)


def sidecar_path(video_path: str | os.PathLike) -> Path:
    """The settings sidecar of a video: `out.mp4` -> `out.json`."""
    return Path(video_path).with_suffix(".json")


def write_sidecar(path: str | os.PathLike, settings: Mapping[str, Any]) -> Path:
    """Write `settings` as indented JSON to `path`, atomically. Returns the path written."""
    path = Path(path)
    text = settings_json(settings, indent=2) + "\n"
    with atomic_path(path) as tmp, open(tmp, "x", encoding="utf-8") as f:
        f.write(text)
    return path


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


def to_uint8_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Convert frames to a contiguous numpy `uint8 (F, H, W, 3)` array.

    Accepts `uint8 (F, H, W, 3)` (returned as is) or float pixels `(3, F, H, W)` /
    `(1, 3, F, H, W)` in `[-1, 1]` (clamped, mapped to 0..255 and rounded).
    """
    if isinstance(frames, torch.Tensor):
        if frames.dtype == torch.uint8:
            frames = frames.cpu().numpy()
        else:
            x = frames.detach().float()
            if x.ndim == 5 and x.shape[0] == 1:
                x = x[0]
            if x.ndim != 4 or x.shape[0] != 3:
                raise ValueError(
                    f"float frames must be (3, F, H, W) or (1, 3, F, H, W), got {tuple(x.shape)}"
                )
            x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            return np.ascontiguousarray(x.permute(1, 2, 3, 0).cpu().numpy())
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        return to_uint8_frames(torch.from_numpy(np.asarray(frames, dtype=np.float32)))
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"uint8 frames must be (F, H, W, 3), got {frames.shape}")
    return np.ascontiguousarray(frames)


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Pad (F, H, W, 3) by repeating the last row/column so H and W are even (yuv420p needs it)."""
    _, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | torch.Tensor,
    fps: float,
    *,
    crf: int = 18,
    metadata: Mapping[str, Any] | None = None,
    preset: str = "medium",
    pad_odd: bool = True,
    deterministic: bool = True,
) -> Path:
    """Write frames as an H.264 (libx264, yuv420p) video, atomically. Returns the path.

    frames: `uint8 (F, H, W, 3)` or float `(3, F, H, W)` / `(1, 3, F, H, W)` in `[-1, 1]`.
    fps: frames per second (may be fractional, e.g. 29.97).
    crf: x264 constant rate factor, 0 (lossless) to 51; 18 is visually near lossless.
    metadata: settings stored as one JSON object in the container's `comment` tag.
    pad_odd: yuv420p needs even sizes; odd heights/widths are padded by one repeated row/column
        (true) or refused with a UserError (false).
    deterministic: the same frames give the same bytes: one x264 thread and no macroblock-tree
        rate control (with it, x264's lookahead on small frames read memory it had not set, and
        the same 64x64 frames gave another file in about 1 write of 10, decoded up to 30 levels
        apart; measured 40 of 40 identical without it).
    """
    frames = to_uint8_frames(frames)
    f, h, w, _ = frames.shape
    if f == 0:
        raise ValueError("frames: need at least one frame, got 0")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in 0..51, got {crf}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if (h % 2 or w % 2) and not pad_odd:
        raise UserError(
            f"video size {w}x{h} is odd; H.264 yuv420p needs even width and height, resize the input"
        )
    frames = _pad_to_even(frames)
    path = Path(path)
    with atomic_path(path) as tmp, _open_av(tmp, "w") as container:
        if metadata:
            container.metadata[METADATA_TAG] = settings_json(metadata)
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        if deterministic:
            stream.options |= {"threads": "1", "x264-params": "mbtree=0"}
        for index, frame in enumerate(frames):
            image = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
            image.pts = index
            container.mux(stream.encode(image))
        container.mux(stream.encode())
    return path


@contextlib.contextmanager
def _open_av(path: Path, mode: str):
    container = av.open(str(path), mode)
    try:
        yield container
    finally:
        container.close()


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Read back the settings stored by `write_video` (empty dict for videos made elsewhere)."""
    path = _existing(path, "video")
    try:
        with _open_av(path, "r") as container:
            text = container.metadata.get(METADATA_TAG)
    except (av.FFmpegError, OSError) as err:
        raise UserError(
            f"cannot read {path} as a video ({_reason(err)}); check that it is a video file"
        ) from None
    if not text:
        return {}
    try:
        settings = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return settings if isinstance(settings, dict) else {}


def read_video(
    path: str | os.PathLike,
    *,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
) -> tuple[np.ndarray, float]:
    """Decode a video into `(uint8 (F, H, W, 3), fps)`.

    size: `(H, W)` to resize and center-crop every frame to.
    fps: resample to this rate by taking, for each output time k/fps, the nearest source frame
        (frames are dropped or repeated); the returned fps is then this value.
    max_frames: stop after this many output frames.
    Raises UserError for a missing file, a file that is not a video, or one without frames.
    """
    path = _existing(path, "video")
    frames: list[np.ndarray] = []
    try:
        with _open_av(path, "r") as container:
            if not container.streams.video:
                raise UserError(f"{path} has no video stream; give a video file (e.g. .mp4)")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            src_fps = float(rate) if rate else 30.0
            out_fps = float(fps) if fps else src_fps
            for image in _resampled(container.decode(stream), src_fps, out_fps):
                if size is not None:
                    image = resize_center_crop(image, *size)
                frames.append(image)
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except (av.FFmpegError, OSError) as err:
        if not frames:
            raise UserError(
                f"cannot decode {path} ({_reason(err)}); check that it is a complete video file"
            ) from None
        # A truncated file: keep what decoded (e.g. a render cut short).
    if not frames:
        raise UserError(f"{path} contains no decodable frames; check that it is a complete video file")
    return np.stack(frames), out_fps


def _resampled(decoded, src_fps: float, out_fps: float) -> Iterator[np.ndarray]:
    """Yield rgb24 frames; when the rates differ, pick the nearest source frame for each k/out_fps."""
    if abs(src_fps - out_fps) < 1e-6:
        for frame in decoded:
            yield frame.to_ndarray(format="rgb24")
        return
    k = 0
    prev_time, prev_image, t0 = None, None, None
    for i, frame in enumerate(decoded):
        t = frame.time if frame.time is not None else i / src_fps
        t0 = t if t0 is None else t0
        t -= t0
        image = frame.to_ndarray(format="rgb24")
        if prev_image is not None:
            midpoint = (prev_time + t) / 2
            while k / out_fps < midpoint:
                yield prev_image
                k += 1
        prev_time, prev_image = t, image
    if prev_image is not None:
        end = prev_time + 1 / src_fps  # the last frame lasts one source frame period
        while k / out_fps < end - 1e-9:
            yield prev_image
            k += 1


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as `uint8 (H, W, 3)` RGB.

    Alpha is composited over white; 16-bit and 32-bit integer grayscale is scaled to 8 bits
    (65535 -> 255), float grayscale is read as 0..1; CMYK and palette images are converted;
    an animated image gives its first frame.
    """
    from PIL import Image, UnidentifiedImageError

    path = _existing(path, "image")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                values = np.asarray(image, dtype=np.float64)
                scale = 255.0 if image.mode == "F" else 255.0 / 65535.0
                gray = np.clip(np.round(values * scale), 0, 255).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=-1)
            if image.mode in ("RGBA", "LA", "P") and (image.mode != "P" or "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except Image.DecompressionBombError:
        raise UserError(
            f"{path} claims more than {Image.MAX_IMAGE_PIXELS:,} pixels; give an image under about 90 megapixels"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserError(
            f"cannot read {path} as an image ({_reason(err)}); give a PNG, JPEG, WebP or BMP file"
        ) from None


def resize_center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale `uint8 (H, W, 3)` to cover `height x width` (aspect kept, Lanczos), then center-crop.

    The official demo's `resize_and_center_crop`, pixel for pixel: sides `round(side * scale)`,
    and the crop box `((W' - width) / 2, ...)` that PIL rounds half to even (Python's `round`), so
    an odd margin of 3 gives an offset of 2 where flooring gives 1. Unlike the demo, an odd target
    side keeps its size (the demo's box rounds both edges and can lose a pixel).
    """
    from PIL import Image

    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive, got {height}x{width}")
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    resized = Image.fromarray(image).resize((new_w, new_h), Image.LANCZOS)
    top, left = round((new_h - height) / 2), round((new_w - width) / 2)
    return np.asarray(resized.crop((left, top, left + width, top + height)), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _existing(path: str | os.PathLike, kind: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{kind} file {path} does not exist; check the path")
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a {kind} file")
    return path


def _reason(err: BaseException) -> str:
    """A short reason for a decode error: FFmpeg's message without errno and path."""
    strerror = getattr(err, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror.strip().lower()
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
