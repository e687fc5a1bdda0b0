"""Training samples, deterministic per (seed, step, micro-batch).

Every micro-batch draws its clips, layouts, section positions, noise levels and noise from one
`torch.Generator` seeded by `(seed, step, micro_index)`, where `micro_index` counts the global
batch's micro-batches across all processes. So a resumed run sees exactly the data of an
uninterrupted one, and N processes see together exactly what one process sees with the same
global batch (process r takes micro-batches r, r + N, r + 2N, ...).

Clip sources: the procedural world (`WorldClips`, training seeds only) or a video folder
(`VideoFolder`; unreadable or too-short files are skipped and counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from framepack.codecs.base import Codec
from framepack.packing import PackedContext, Schedule
from framepack.train.config import TrainConfig
from framepack.train.layouts import SectionLayout, build_context, draw_layout, stack_contexts
from framepack.train.loss import sample_sigmas


class ClipSource(Protocol):
    """Training clips: `clip(i)` -> (pixels (3, F, H, W) in [-1, 1], caption timeline)."""

    def __len__(self) -> int: ...

    def clip(self, index: int) -> tuple[Tensor, list[tuple[float, str]]]: ...


class WorldSource:
    """Clips of the procedural world from the training split (`SPLITS["train"]`)."""

    def __init__(self, num_frames: int, size: int, fps: float, seed: int, length: int) -> None:
        from framepack.data.world_clips import WorldClips

        self.dataset = WorldClips(num_frames, size, fps, split="train", length=length, seed=seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def clip(self, index: int) -> tuple[Tensor, list[tuple[float, str]]]:
        clip = self.dataset.clip(index)
        pixels = torch.from_numpy(clip.frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0  # (3, F, H, W)
        return pixels, clip.captions

    def captions(self, count: int) -> list[str]:
        """Captions of the first `count` training scripts (no rendering), for the vocabulary."""
        from framepack.data.world_script import caption_timeline, random_script

        ds = self.dataset
        seconds = ds.num_frames / ds.fps
        timelines = (
            caption_timeline(random_script(ds.clip_seed(i), seconds, ds.fps, **ds.script_options))
            for i in range(min(count, len(ds)))
        )
        return [text for timeline in timelines for _, text in timeline]


class VideoSource:
    """Clips of a video folder; files that cannot be read are skipped and counted."""

    def __init__(self, root: str, num_frames: int, size: int, fps: float, seed: int) -> None:
        from framepack.data.videos import VideoFolder

        self.dataset = VideoFolder(root, num_frames, size, fps, seed=seed, clips_per_video=1000)
        if len(self.dataset.videos) == 0:
            from framepack.errors import UserError

            raise UserError(
                f"no usable video under {root} ({len(self.dataset.skipped)} skipped); "
                "give a folder of mp4/webm/mov/mkv files long enough for one clip"
            )

    def __len__(self) -> int:
        return len(self.dataset)

    def clip(self, index: int) -> tuple[Tensor, list[tuple[float, str]]]:
        item = self.dataset[index]
        return item["pixels"], [(0.0, item["caption"])]

    def captions(self, count: int) -> list[str]:
        return [v.caption for v in self.dataset.videos]

    @property
    def skipped(self) -> dict[str, int]:
        return self.dataset.skip_counts


def make_source(config: TrainConfig, num_frames: int) -> WorldSource | VideoSource:
    data = config.data
    if data.kind == "videos":
        return VideoSource(str(data.path), num_frames, data.size, data.fps, data.seed)
    return WorldSource(num_frames, data.size, data.fps, data.seed, data.num_clips)


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
    """

    target: Tensor
    target_indices: Tensor
    context: PackedContext
    captions: list[str]
    sigma: Tensor
    noise: Tensor
    layouts: list[str]


def section_caption(captions: list[tuple[float, str]], lay: SectionLayout, codec: Codec, fps: float) -> str:
    """The caption active at the middle pixel frame of the section."""
    first = codec.num_frames(lay.start)  # latent k >= 1 covers frames num_frames(k) .. num_frames(k+1)-1
    last = codec.num_frames(lay.start + lay.window) - 1
    seconds = 0.5 * (first + last) / fps
    text = captions[0][1]
    for start, caption in captions:
        if start <= seconds + 1e-9:
            text = caption
    return text


def draw_micro_batches(
    config: TrainConfig,
    source: ClipSource,
    codec: Codec,
    schedule: Schedule,
    step: int,
    micro_index: int,
) -> list[MicroBatch]:
    """The samples of one global micro-batch, grouped by context shape (usually one group)."""
    gen = sample_generator(config.seed, step, micro_index)
    m, window, length = config.micro_batch, config.window, config.data.clip_latents
    clip_ids = torch.randint(len(source), (m,), generator=gen).tolist()
    lays = [draw_layout(config.layouts, length, window, gen) for _ in range(m)]
    clips = [source.clip(i) for i in clip_ids]
    with torch.no_grad():
        latents = codec.encode(torch.stack([pixels for pixels, _ in clips]))  # (m, C, T, h, w)
    sigma = sample_sigmas(
        m, gen, config.sigma_kind, config.sigma_shift, config.sigma_mean, config.sigma_std
    )  # (m,)
    samples: dict[Any, list[tuple[Any, ...]]] = {}
    for i, lay in enumerate(lays):
        context, target, target_idx = build_context(
            latents[i : i + 1], lay, schedule, config.history_noise, gen
        )
        noise = torch.randn(target.shape, generator=gen)
        caption = section_caption(clips[i][1], lay, codec, config.data.fps)
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
        )
        for group in samples.values()
    ]
