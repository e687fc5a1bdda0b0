"""A dataset over a folder of video files (mp4, webm, mov, mkv), decoded with PyAV.

Each item is a clip of `num_frames` frames resampled **by time** to the model's fps (frame k
shows the source frame nearest to t0 + k / fps, whatever the file's own frame rate), resized to
cover the model size and centre-cropped to it. The folder is indexed once, on construction,
from stream metadata (falling back to decoding when a file has none). Files that cannot be read
or are too short for one clip are skipped with a logged warning and listed in
`dataset.skipped`, so a training run can report them and never dies on one bad file.

Captions come from a sidecar text file with the same stem (`clip.mp4` -> `clip.txt`), else
`default_caption`.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv")


@dataclass(frozen=True)
class VideoInfo:
    """Index entry of one usable file: size, native fps, times of its first and last frames (s)."""

    path: Path
    width: int
    height: int
    fps: float
    first_time: float
    last_time: float
    caption: str

    @property
    def span(self) -> float:
        """Seconds from the first to the last frame."""
        return self.last_time - self.first_time


@dataclass(frozen=True)
class Skipped:
    """A file left out of the dataset: `reason` is a short category, `detail` says more."""

    path: Path
    reason: str  # "unreadable" | "no video stream" | "too short"
    detail: str


class ClipReadError(Exception):
    """A file that indexed fine failed while reading a clip."""


class VideoFolder(torch.utils.data.Dataset):
    """Clips of `num_frames` frames at `fps`, `size` (H, W), from the videos under `root`.

    `dataset[i]` returns a dict:
      pixels   float32 (3, F, H, W) in [-1, 1]
      caption  str (sidecar .txt or `default_caption`)
      path     str, the source file
      start    float, the clip's start time in seconds from the file's first frame
    Item i reads video `i % len(videos)` at a start time drawn from (seed, i), so items are
    deterministic; `clips_per_video` sets how many items each video contributes.
    """

    def __init__(
        self,
        root: str | Path,
        num_frames: int,
        size: int | tuple[int, int],
        fps: float,
        *,
        clips_per_video: int = 1,
        seed: int = 0,
        default_caption: str = "",
        recursive: bool = True,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root must be an existing folder, got {self.root}")
        if num_frames < 1 or fps <= 0 or clips_per_video < 1:
            raise ValueError(
                f"need num_frames >= 1, fps > 0, clips_per_video >= 1; got {num_frames}, {fps}, {clips_per_video}"
            )
        self.num_frames, self.fps = num_frames, float(fps)
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.clips_per_video, self.seed, self.default_caption = clips_per_video, seed, default_caption
        self.videos: list[VideoInfo] = []
        self.skipped: list[Skipped] = []
        self._broken: set[int] = set()  # videos that indexed fine but failed while reading
        pattern = "**/*" if recursive else "*"
        files = sorted(
            p for p in self.root.glob(pattern) if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
        )
        for path in files:
            self._index(path)
        log.info("indexed %d videos under %s, skipped %d", len(self.videos), self.root, len(self.skipped))

    @property
    def clip_seconds(self) -> float:
        """Time from a clip's first to its last frame."""
        return (self.num_frames - 1) / self.fps

    @property
    def skip_counts(self) -> dict[str, int]:
        """Number of skipped files per reason."""
        return dict(Counter(s.reason for s in self.skipped))

    def _skip(self, path: Path, reason: str, detail: str) -> None:
        log.warning("skipping %s: %s (%s)", path, reason, detail)
        self.skipped.append(Skipped(path, reason, detail))

    def _index(self, path: Path) -> None:
        try:
            info = probe(path)
        except _NoVideo as err:
            return self._skip(path, "no video stream", str(err))
        except Exception as err:  # PyAV raises many error types for damaged files
            return self._skip(path, "unreadable", f"{type(err).__name__}: {err}")
        if info is None:
            return self._skip(path, "unreadable", "no frame could be decoded")
        if info.last_time - info.first_time + 1e-6 < self.clip_seconds:
            return self._skip(
                path,
                "too short",
                f"{info.last_time - info.first_time:.3f} s of frames < {self.clip_seconds:.3f} s needed",
            )
        sidecar = path.with_suffix(".txt")
        caption = sidecar.read_text().strip() if sidecar.is_file() else self.default_caption
        self.videos.append(
            VideoInfo(path, info.width, info.height, info.fps, info.first_time, info.last_time, caption)
        )

    def __len__(self) -> int:
        return len(self.videos) * self.clips_per_video

    def start_time(self, index: int) -> float:
        """Start of item `index` in seconds from its video's first frame, drawn from (seed, index)."""
        video = self.videos[index % len(self.videos)]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, index]))
        return float(rng.uniform(0.0, max(0.0, video.span - self.clip_seconds)))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        # A file that fails while reading (e.g. truncated after a header that promised more) is
        # reported once, marked broken and replaced by the next video: one bad file never ends a run.
        for attempt in range(len(self.videos)):
            v = (index + attempt) % len(self.videos)
            if v in self._broken:
                continue
            video = self.videos[v]
            start = self.start_time(index) if attempt == 0 else 0.0
            try:
                frames = read_clip(video, start, self.num_frames, self.fps, self.size)
            except Exception as err:
                self._broken.add(v)
                self._skip(video.path, "unreadable", f"while reading a clip: {type(err).__name__}: {err}")
                continue
            pixels = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0  # (3, F, H, W)
            return {"pixels": pixels, "caption": video.caption, "path": str(video.path), "start": start}
        raise RuntimeError(f"no video under {self.root} could be read; see the warnings above")


class _NoVideo(Exception):
    pass


@dataclass(frozen=True)
class _Probe:
    width: int
    height: int
    fps: float
    first_time: float
    last_time: float


def probe(path: Path) -> _Probe | None:
    """Size, fps and first/last frame times of a file's first video stream.

    Uses stream metadata when it has a frame rate and a duration, else decodes the whole
    stream. Always decodes the first frame, so a file that opens but cannot decode is caught
    here. Returns None if no frame decodes; raises on unreadable files.
    """
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise _NoVideo("the file has no video stream")
        stream = container.streams.video[0]
        first = next(iter(container.decode(stream)), None)
        if first is None:
            return None
        first_time = float(first.time or 0.0)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        if fps > 0 and duration is not None and duration > 0:
            stream_start = (
                float(stream.start_time * stream.time_base) if stream.start_time is not None else first_time
            )
            last_time = stream_start + duration - 1.0 / fps
            return _Probe(first.width, first.height, fps, first_time, max(first_time, last_time))
    return _probe_by_decoding(path)


def _probe_by_decoding(path: Path) -> _Probe | None:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times, size = [], None
        for k, frame in enumerate(container.decode(stream)):
            times.append(float(frame.time) if frame.time is not None else float(k))
            size = size or (frame.width, frame.height)
    if not times:
        return None
    fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 30.0
    return _Probe(size[0], size[1], fps, times[0], times[-1])


def read_clip(
    video: VideoInfo, start: float, num_frames: int, fps: float, size: tuple[int, int]
) -> np.ndarray:
    """Frames uint8 `(num_frames, H, W, 3)` at times start + k / fps (seconds from the first frame).

    Each output frame is the source frame nearest in time (ties go to the earlier one), so a
    24 fps file read at 30 fps repeats some frames and a 60 fps file drops every other one.
    """
    import av

    targets = video.first_time + start + np.arange(num_frames) / fps
    tolerance = 0.5 / video.fps + 1e-6  # how far past the last frame a target may fall
    out = np.empty((num_frames, *size, 3), np.uint8)
    k = 0
    prev: tuple[float, Any] | None = None  # (time, frame) of the previous decoded frame
    memo: list[Any] = [None, None]  # the last converted frame and its pixels (reused when upsampling)

    def pixels(frame: Any) -> np.ndarray:
        if memo[0] is not frame:
            memo[:] = [frame, _resize_crop(frame, size)]
        return memo[1]

    with av.open(str(video.path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if start > 0.5 and stream.time_base is not None:
            # Seek to the keyframe at or before the first target, then decode forward.
            container.seek(int(max(0.0, targets[0] - 0.5) / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            t = float(frame.time)
            while k < num_frames and targets[k] <= t:
                nearest = prev if prev is not None and targets[k] - prev[0] <= t - targets[k] else (t, frame)
                out[k] = pixels(nearest[1])
                k += 1
            if k == num_frames:
                break
            prev = (t, frame)
    while k < num_frames and prev is not None and targets[k] - prev[0] <= tolerance:
        out[k] = pixels(prev[1])
        k += 1
    if k < num_frames:
        raise ClipReadError(f"decoded frames end before {targets[k] - video.first_time:.3f} s")
    return out


def _resize_crop(frame: Any, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 (H, W, 3): scale to cover `size` keeping the aspect ratio, then centre-crop."""
    height, width = size
    scale = max(height / frame.height, width / frame.width)
    rh, rw = (
        max(height, math.ceil(frame.height * scale - 1e-6)),
        max(width, math.ceil(frame.width * scale - 1e-6)),
    )
    rgb = frame.to_ndarray(width=rw, height=rh, format="rgb24", interpolation="AREA")
    y0, x0 = (rh - height) // 2, (rw - width) // 2
    return rgb[y0 : y0 + height, x0 : x0 + width]
