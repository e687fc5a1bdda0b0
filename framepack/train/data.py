"""Training samples, deterministic per (seed, step, micro-batch).

Every micro-batch draws its clips, layouts, section positions, noise levels and noise from one
`torch.Generator` seeded by `(seed, step, micro_index)`, where `micro_index` counts the global
batch's micro-batches across all processes. So a resumed run sees exactly the data of an
uninterrupted one, and N processes see together exactly what one process sees with the same
global batch (process r takes micro-batches r, r + N, r + 2N, ...).

A sample is the start frame of a video plus a window of `clip_latents` latents, which follows
the start frame or (half of the time, for the world) begins anywhere in a video of
`data.seconds`; a section and its layout are drawn inside the window (framepack.train.layouts).
Sources: the procedural world (`WorldClips` seeds of the training split only; only the frames
a sample needs are rendered) or a video folder (`VideoFolder`; unreadable or too-short files
are skipped and counted in the run's checkpoints).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from framepack.codecs.base import Codec
from framepack.discretize import latent_vectors
from framepack.errors import UserError
from framepack.packing import PackedContext, Schedule
from framepack.train.config import TrainConfig
from framepack.train.layouts import SectionLayout, build_context, draw_layout, stack_contexts
from framepack.train.loss import sample_sigmas


class ClipSource(Protocol):
    """Training videos: `frames(i, frame_ids)` -> (pixels (3, F, H, W) in [-1, 1] of those frames,
    caption timeline [(seconds, text), ...]); `num_frames` frames per video."""

    num_frames: int

    def __len__(self) -> int: ...

    def frames(self, index: int, frame_ids: list[int]) -> tuple[Tensor, list[tuple[float, str]]]: ...

    def captions(self, count: int) -> list[str]: ...


def _to_pixels(frames: np.ndarray) -> Tensor:
    """uint8 (F, H, W, 3) -> float32 (3, F, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0


class WorldSource:
    """Long videos of the procedural world (training runs use `split="train"` only; evaluation
    uses the disjoint "eval" seed range).

    Only the frames a sample needs are rendered (its start frame and one window), so a sample
    can sit anywhere in a video of `seconds`, at the cost of a short clip. `script_options` are
    passed to `random_script` (e.g. `{"p_hold": 0}`: pans throughout); None keeps the default
    scripts, those of training.
    """

    def __init__(
        self,
        seconds: float,
        size: int,
        fps: float,
        seed: int,
        length: int,
        split: str = "train",
        script_options: dict[str, Any] | None = None,
    ) -> None:
        from framepack.data.world_clips import WorldClips

        self.num_frames = max(1, round(seconds * fps))
        self.dataset = WorldClips(
            self.num_frames, size, fps, split=split, length=length, seed=seed, script_options=script_options
        )

    def __len__(self) -> int:
        return len(self.dataset)

    def _script(self, index: int):
        from framepack.data.world_script import random_script

        ds = self.dataset
        return random_script(ds.clip_seed(index), ds.num_frames / ds.fps, ds.fps, **ds.script_options)

    def frames(self, index: int, frame_ids: list[int]) -> tuple[Tensor, list[tuple[float, str]]]:
        from fractions import Fraction

        from framepack.data.world import World
        from framepack.data.world_script import as_fraction, camera_path, caption_timeline

        ds = self.dataset
        script = self._script(index)
        world = World(ds.clip_seed(index), ds.config)
        cameras = camera_path(script, ds.num_frames, ds.fps)
        fps = as_fraction(ds.fps)
        views = [world.render(tuple(cameras[f]), ds.size, ds.size, Fraction(f) / fps) for f in frame_ids]
        return _to_pixels(np.stack(views)), caption_timeline(script)

    def captions(self, count: int) -> list[str]:
        """Captions of the first `count` training scripts (no rendering), for the vocabulary."""
        from framepack.data.world_script import caption_timeline

        timelines = (caption_timeline(self._script(i)) for i in range(min(count, len(self))))
        return [text for timeline in timelines for _, text in timeline]


class VideoSource:
    """Clips of a video folder; files that cannot be read are skipped and counted."""

    def __init__(self, root: str, num_frames: int, size: int, fps: float, seed: int) -> None:
        from framepack.data.videos import VideoFolder

        self.num_frames = num_frames
        self.dataset = VideoFolder(root, num_frames, size, fps, seed=seed, clips_per_video=1000)
        if len(self.dataset.videos) == 0:
            raise UserError(
                f"no usable video under {root} ({len(self.dataset.skipped)} skipped); "
                "give a folder of mp4/webm/mov/mkv files long enough for one clip"
            )

    def __len__(self) -> int:
        return len(self.dataset)

    def frames(self, index: int, frame_ids: list[int]) -> tuple[Tensor, list[tuple[float, str]]]:
        item = self.dataset[index]
        return item["pixels"][:, frame_ids], [(0.0, item["caption"])]

    def captions(self, count: int) -> list[str]:
        return [v.caption for v in self.dataset.videos]

    @property
    def skipped(self) -> dict[str, int]:
        return self.dataset.skip_counts


def make_source(config: TrainConfig, codec: Codec) -> WorldSource | VideoSource:
    """The run's videos: long world videos, or video-folder clips of exactly one window."""
    data = config.data
    if data.kind == "latents":
        from framepack.train.latent_cache import LatentSource

        cached = LatentSource(str(data.path))
        _check_cache(cached.meta, config, codec)
        return cached
    if data.kind == "videos":
        if not Path(str(data.path)).is_dir():
            raise UserError(f"data.path {data.path}: no such folder of training videos")
        num_frames = codec.num_frames(data.clip_latents + 1)
        return VideoSource(str(data.path), num_frames, data.size, data.fps, data.seed)
    return WorldSource(data.seconds, data.size, data.fps, data.seed, data.num_clips)


def _check_cache(meta: dict[str, Any], config: TrainConfig, codec: Codec) -> None:
    """Refuse a latent cache made with another codec, frame size or shorter windows."""
    data = config.data
    wanted = {
        "size": data.size,
        "fps": data.fps,
        "seconds": data.seconds,
        "scaling_factor": codec.config().get("scaling_factor"),
    }
    have = {k: meta[k] for k in ("size", "fps", "seconds")} | {
        "scaling_factor": meta["codec"].get("scaling_factor")
    }
    if wanted != have or meta["codec"].get("kind") != codec.config().get("kind"):
        raise UserError(
            f"data.path {data.path}: the latent cache was built with {have}, this run needs {wanted}"
        )
    if meta["clip_latents"] < data.clip_latents:
        raise UserError(
            f"data.path {data.path}: cached windows hold {meta['clip_latents']} latents, "
            f"data.clip_latents asks {data.clip_latents}; lower it or rebuild the cache"
        )


def sample_window(
    source: ClipSource,
    codec: Codec,
    index: int,
    latents: int,
    gen: torch.Generator,
    follow_start: bool = False,
    needed: int | None = None,
) -> tuple[Tensor, Tensor, list[tuple[float, str]]]:
    """The start latent and a window of `latents` latents of video `index`.

    Half of the windows (all of them with `follow_start`) follow the start frame directly; the
    others begin anywhere in the video, so sections far from the start frame (inverted and
    endpoints plans) are trained too. Only the first `needed` latents of the window are rendered
    (all by default; a forward section never reads the frames after it).
    Returns latents (C, 1 + needed, h, w), their frame indices (1 + needed,) int64, the captions.
    """
    if hasattr(source, "window"):  # a latent cache (framepack.train.latent_cache)
        return source.window(index, gen, follow_start, latents if needed is None else min(needed, latents))
    t = codec.time_factor
    max_offset = 1 + (source.num_frames - 1) // t - latents  # last first latent fully inside
    far = max_offset > 1 and bool(torch.rand((), generator=gen) < 0.5) and not follow_start
    offset = int(torch.randint(2, max_offset + 1, (), generator=gen)) if far else 1
    # A causal codec maps 1 + t*n frames to 1 + n latents; the window's first frame group
    # starts at frame t*(offset-1) + 1, so its encoding starts one frame earlier.
    first = t * (offset - 1)
    latents = latents if needed is None else min(needed, latents)
    frame_ids = list(range(first, first + 1 + t * latents))
    pixels, captions = source.frames(index, [0, *frame_ids] if offset > 1 else frame_ids)
    with torch.no_grad():
        if offset == 1:
            encoded = codec.encode(pixels[None])[0]  # (C, 1 + n, h, w): start frame + window
        else:
            start = codec.encode(pixels[None, :, :1])[0]  # (C, 1, h, w)
            window = codec.encode(pixels[None, :, 1:])[0, :, 1:]  # (C, n, h, w)
            encoded = torch.cat([start, window], dim=1)
    indices = torch.tensor([0, *range(offset, offset + latents)], dtype=torch.int64)
    return encoded, indices, captions


def history_sample(
    config: TrainConfig, source: ClipSource, codec: Codec, clips: int = 32, max_vectors: int = 65536
) -> Tensor:
    """Latent vectors of training history for the history codebook (framepack.discretize):
    `clips` windows drawn as training draws them (`sample_window`, a generator seeded by
    `config.seed`), their history positions only (the start frame excluded), at most
    `max_vectors` of them drawn without replacement. Returns (N, C) float32."""
    gen = torch.Generator().manual_seed(config.seed)
    parts = []
    for _ in range(min(clips, len(source))):
        clip = int(torch.randint(len(source), (), generator=gen))
        latents, _, _ = sample_window(source, codec, clip, config.data.clip_latents, gen)
        parts.append(latent_vectors(latents[None, :, 1:]))  # (n*h*w, C)
    vectors = torch.cat(parts)
    if len(vectors) > max_vectors:
        vectors = vectors[torch.randperm(len(vectors), generator=gen)[:max_vectors]]
    return vectors


def sample_generator(seed: int, step: int, micro_index: int) -> torch.Generator:
    """A generator keyed by (seed, step, micro_index): the only randomness of a micro-batch."""
    state = np.random.SeedSequence([seed, step, micro_index]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


@dataclass
class MicroBatch:
    """One forward pass worth of samples (all with the same context level sizes).

    target:   (m, C, window, h, w) clean latents of the sections; target_indices (m, window).
    context:  the packed context, batch m.
    captions: the caption active at each section's middle frame ("" with prob. caption_dropout).
    sigma:    (m,) noise levels; noise: (m, C, window, h, w).
    layouts:  the layout name of each sample.
    micro_index: the global micro-batch it was drawn for (keys further draws, e.g. distillation's).
    """

    target: Tensor
    target_indices: Tensor
    context: PackedContext
    captions: list[str]
    sigma: Tensor
    noise: Tensor
    layouts: list[str]
    micro_index: int = 0


def section_caption(
    captions: list[tuple[float, str]], first_latent: int, window: int, codec: Codec, fps: float
) -> str:
    """The caption active at the middle pixel frame of a section starting at latent `first_latent`."""
    first = codec.num_frames(first_latent)  # latent k >= 1 covers frames num_frames(k) .. num_frames(k+1)-1
    last = codec.num_frames(first_latent + window) - 1
    seconds = 0.5 * (first + last) / fps
    text = captions[0][1]
    for start, caption in captions:
        if start <= seconds + 1e-9:
            text = caption
    return text


def history_options(
    config: TrainConfig, lay: SectionLayout, gen: torch.Generator
) -> tuple[SectionLayout, float]:
    """The sample's history noise std and, with `history_dropout`, its history dropped.

    Random numbers are drawn only for the options that are on, so runs without them draw
    exactly the samples they drew before these options existed."""
    std = config.history_noise
    if config.history_noise_uniform:
        std *= float(torch.rand((), generator=gen))
    if config.history_dropout > 0 and bool(torch.rand((), generator=gen) < config.history_dropout):
        lay = dataclasses.replace(lay, history=())
    return lay, std


def draw_micro_batches(
    config: TrainConfig,
    source: ClipSource,
    codec: Codec,
    schedule: Schedule,
    step: int,
    micro_index: int,
    quantize: Callable[[Tensor], Tensor] | None = None,
) -> list[MicroBatch]:
    """The samples of one global micro-batch, grouped by context shape (usually one group);
    `quantize` discretizes the history frames (framepack.context.section_context)."""
    gen = sample_generator(config.seed, step, micro_index)
    m, window, n = config.micro_batch, config.window, config.data.clip_latents
    sigma = sample_sigmas(
        m, gen, config.sigma_kind, config.sigma_shift, config.sigma_mean, config.sigma_std
    )  # (m,)
    samples: dict[Any, list[tuple[Any, ...]]] = {}
    for i in range(m):
        clip = int(torch.randint(len(source), (), generator=gen))
        # The first section after a lone image sees no motion: only the prompt says where to go.
        share = config.first_section_share
        first = share > 0 and bool(torch.rand((), generator=gen) < share)
        lay = draw_layout(config.layouts, 1 + n, window, gen, first=first)
        needed = lay.start + window - 1 if lay.layout == "forward" else n
        latents, indices, captions = sample_window(source, codec, clip, n, gen, first, needed)
        lay, noise_std = history_options(config, lay, gen)
        context, target, target_idx = build_context(
            latents[None], indices, lay, schedule, noise_std, gen, quantize=quantize
        )
        noise = torch.randn(target.shape, generator=gen)
        caption = section_caption(captions, int(target_idx[0, 0]), window, codec, config.data.fps)
        if float(torch.rand((), generator=gen)) < config.caption_dropout:
            caption = ""  # unconditional samples, for classifier-free guidance
        key = tuple((lv.kernel, lv.num_frames) for lv in context.levels)
        samples.setdefault(key, []).append(
            (context, target, target_idx, caption, sigma[i : i + 1], noise, lay)
        )
    return [
        MicroBatch(
            target=torch.cat([s[1] for s in group]),
            target_indices=torch.cat([s[2] for s in group]),
            context=stack_contexts([s[0] for s in group]),
            captions=[s[3] for s in group],
            sigma=torch.cat([s[4] for s in group]),
            noise=torch.cat([s[5] for s in group]),
            layouts=[s[6].layout for s in group],
            micro_index=micro_index,
        )
        for group in samples.values()
    ]
