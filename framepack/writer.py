"""Decoding a job's latent timeline and writing its video, rewritten as sections land.

`VideoWriter` keeps decoded pixels per run of generated latents and rewrites the MP4 atomically
(framepack.video.write_video). Two ways to decode, chosen by the codec (`decodes_in_windows`):

- exact codecs (the pixel codec, the demo's causal autoencoder): each run of generated latents
  is decoded whole (cached per run); decoding a window of them would give the same frames. A
  codec whose decoding of latent t reads latents t - 1 and t only (class attribute
  `left_context = 1`, framepack.codecs.base) is decoded incrementally: when a cached run has
  grown on the right, only the new latents are decoded, with one latent of context whose frame
  is dropped, so each write costs the new section, not the whole video.
- causal video VAEs (codecs with `crossfade_decode = True`, the HunyuanVideo VAE): as the
  official demo, each new section is decoded together with up to `window` latents of the run it
  extends, and the result is cross-faded (`soft_append`, linear weights) over those latents'
  frames with the pixels decoded before. A run's frame count stays exactly
  `codec.num_frames(run length)`. Sections must be added in generation order, also when resuming.

Pixels are clamped to [-1, 1] only when written (as the official demo), so a cross-fade blends
the decoder's own values.

Rewriting grows with the video; it is throttled (`WRITE_THROTTLE`) so that writing takes at most
a quarter of the time, and in-progress copies use x264's fastest preset (the final write uses
"medium"). The final write always happens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from framepack.codecs.base import Codec, decodes_in_windows, has_left_context
from framepack.video import sidecar_path, write_sidecar, write_video

# An in-progress MP4 is rewritten after a section unless less than WRITE_THROTTLE times the last
# write's cost has passed since it: writing takes at most 1 / (1 + WRITE_THROTTLE) of the time
# however long the video grows (the resume data is saved after every section regardless).
WRITE_THROTTLE = 3.0


def soft_append(history: Tensor, current: Tensor, overlap: int) -> Tensor:
    """Join two videos along time, cross-fading `overlap` frames with linear weights.

    history: (B, C, F1, H, W), current: (B, C, F2, H, W) -> (B, C, F1 + F2 - overlap, H, W).
    Over the overlap, `history`'s weight goes linearly from 1 to 0 and `current`'s from 0 to 1.
    The official demo uses overlap = 4w - 3 = 33 frames (w = 9); for the inverted order the
    newly decoded (earlier-in-time) window is `history` and the video so far is `current`.
    """
    if overlap <= 0:
        return torch.cat([history, current], dim=2)
    if history.shape[2] < overlap or current.shape[2] < overlap:
        raise ValueError(
            f"overlap {overlap} exceeds a video's length (history {history.shape[2]}, current {current.shape[2]})"
        )
    w = torch.linspace(1, 0, overlap, dtype=history.dtype, device=history.device).view(1, 1, -1, 1, 1)
    blended = w * history[:, :, -overlap:] + (1 - w) * current[:, :, :overlap].to(history)
    return torch.cat([history[:, :, :-overlap], blended, current[:, :, overlap:].to(history)], dim=2)


def generated_runs(done: Tensor) -> list[tuple[int, int]]:
    """Maximal [start, stop) runs of True in a bool vector (T,)."""
    runs, start = [], None
    for i, d in enumerate([*done.tolist(), False]):
        if d and start is None:
            start = i
        elif not d and start is not None:
            runs.append((start, i))
            start = None
    return runs


@dataclass(frozen=True)
class VideoFile:
    """Where and how a job's video is written: path, frame rate, x264 quality, the settings
    stored in its metadata and sidecar, and its exact frame count once complete.
    progressive: write in-progress copies as sections land; False (a job replacing an older
    video with --overwrite) writes the video only once complete, so the old one stays until then."""

    path: Path
    fps: float
    crf: int
    settings: dict[str, Any]
    frames: int
    progressive: bool = True


class VideoWriter:
    """Decodes the generated runs of a latent timeline and rewrites the video (module docstring)."""

    def __init__(
        self,
        codec: Codec,
        device: torch.device | str,
        window: int,
        file: VideoFile | None = None,
        source: tuple[Tensor, int] | None = None,
    ) -> None:
        """`file` None: decode only (`decode`), never `write`. `source`: the pixels (1, 3, F, H, W)
        of a video being extended and how many latents its last frames fill at the start of the
        timeline; the video starts with these pixels instead of those latents' decoding."""
        self.codec, self.device, self.window, self.file = codec, device, window, file
        self.source = source
        self.frames = 0  # frames in the last written video
        self.crossfade = decodes_in_windows(codec)
        self._last_write = 0.0
        self._write_cost = 0.0
        self._cache: dict[tuple[int, int], Tensor] = {}

    def add(self, latents: Tensor, done: Tensor, start: int, stop: int) -> None:
        """Decode the just generated latents [start, stop) into the cached pixels (cross-fading
        codecs only; exact codecs decode whole runs when writing). latents (1, C, T, h, w)."""
        if not self.crossfade:
            return
        before = done.clone()
        before[start:stop] = False
        runs = generated_runs(before)
        left = next((r for r in runs if r[1] == start), None)
        right = next((r for r in runs if r[0] == stop), None)
        fade_left = left in self._cache and start - left[0] >= self.window if left else False
        fade_right = right in self._cache and right[1] - stop >= self.window if right else False
        c0 = start - self.window if fade_left else (left[0] if left else start)
        c1 = stop + self.window if fade_right else (right[1] if right else stop)
        video = self._decode(latents, c0, c1)
        if fade_left:
            video = soft_append(self._cache[left], video, self.codec.num_frames(start - c0))
        if fade_right:
            video = soft_append(video, self._cache[right], self.codec.num_frames(c1 - stop))
        for run in (left, right):
            self._cache.pop(run, None)
        self._cache[(left[0] if left else start, right[1] if right else stop)] = video

    def write(self, latents: Tensor, done: Tensor, *, final: bool) -> None:
        """Rewrite the video from every generated run (throttled unless `final`)."""
        if self.file is None:
            raise ValueError("this VideoWriter has no file to write; give it a VideoFile")
        now = time.perf_counter()
        if not final and now - self._last_write < WRITE_THROTTLE * self._write_cost:
            return
        if not self.file.progressive and not bool(done.all()):
            return  # the older video stays until this one is complete
        pixels = self.decode(latents, done)
        if pixels.shape[2] > self.file.frames and bool(done.all()):
            pixels = pixels[:, :, : self.file.frames]
        write_video(
            self.file.path,
            pixels[0],
            self.file.fps,
            crf=self.file.crf,
            metadata=self.file.settings,
            preset="medium" if final else "ultrafast",  # in-progress copies: fast; the last: small
            deterministic=final,  # same frames, same file
        )
        write_sidecar(sidecar_path(self.file.path), {**self.file.settings, "complete": bool(done.all())})
        self.frames = int(pixels.shape[2])
        self._last_write = time.perf_counter()
        self._write_cost = self._last_write - now

    def decode(self, latents: Tensor, done: Tensor) -> Tensor:
        """Pixels (1, 3, F, H, W) of every generated run, in time order (runs decoded once),
        as the decoder gives them (not clamped)."""
        runs = generated_runs(done)
        pieces = []
        for run in runs:
            if run not in self._cache:
                self._cache[run] = self._grow(latents, run)
            pieces.append(self._cache[run])
        if not self.crossfade:
            self._cache = {r: p for r, p in self._cache.items() if r in runs}
        pixels = torch.cat(pieces, dim=2)
        if self.source is not None:  # an extended video's own frames, every one, unchanged
            source, latents_filled = self.source
            covered = self.codec.num_frames(latents_filled)
            pixels = torch.cat([source.to(pixels), pixels[:, :, covered:]], dim=2)
        return pixels

    def _grow(self, latents: Tensor, run: tuple[int, int]) -> Tensor:
        """Pixels of `run`: a cached run that starts where it does and ends earlier is extended
        by decoding only the new latents (codecs with `left_context`), else the run whole."""
        start, stop = run
        shorter = [r for r in self._cache if r[0] == start and r[1] < stop]
        if self.crossfade or not has_left_context(self.codec) or not shorter:
            return self._decode(latents, start, stop)
        prefix = max(shorter)
        new = self._decode(latents, prefix[1] - 1, stop)[:, :, 1:]  # drop the context latent's frame
        return torch.cat([self._cache[prefix], new], dim=2)

    def _decode(self, latents: Tensor, start: int, stop: int) -> Tensor:
        """Pixels (1, 3, F, H, W) of latents [start, stop), float32 on the CPU."""
        with torch.no_grad():
            lat = latents[:, :, start:stop].to(self.device, torch.float32)
            return self.codec.decode(lat).float().cpu()
