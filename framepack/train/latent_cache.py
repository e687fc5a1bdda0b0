"""A cache of encoded world windows, for training on a learned codec's latents (`data.kind = "latents"`).

A learned autoencoder costs ~5 ms per latent to encode on one CPU thread, about as much as the
training step itself, so a run on its latents reads windows encoded once beforehand:
`framepack codec cache --codec DIR --out CACHE --videos N`. Video `i` is training-split world
video `i` of `data.seconds` (the run's `WorldSource`); it stores the start latent, the window
that follows the start frame, and one window at an offset drawn from a generator seeded by
`(seed, i)` (the two kinds of windows `framepack.train.data.sample_window` draws from rendered
frames). Shards of `SHARD` videos are written atomically; an interrupted build resumes at the
first missing shard.

    CACHE/cache.json              codec config, size, fps, seconds, clip_latents, seed, videos
    CACHE/shard-NNNNN.safetensors start (n, C, 1, h, w), first (n, C, L, h, w), far (n, C, L, h, w)
                                  in bfloat16, far_offset (n,) int64
    CACHE/shard-NNNNN.json        the caption timeline of every video of the shard
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from framepack.codecs.base import Codec
from framepack.errors import UserError
from framepack.train.checkpoint import atomic_write_json

SHARD = 250
META_NAME = "cache.json"


def _window_frames(t: int, offset: int, latents: int) -> list[int]:
    """Pixel frames whose causal encoding gives latents offset .. offset + latents - 1 (plus one
    frame before, which a causal codec encodes as its own first latent and the cache drops)."""
    first = t * (offset - 1)
    return list(range(first, first + 1 + t * latents))


def encode_video(source: Any, codec: Codec, index: int, latents: int, seed: int) -> dict[str, Any]:
    """One video's cached windows: start (C, 1, h, w), first and far (C, L, h, w), far_offset, timeline."""
    t = codec.time_factor
    max_offset = 1 + (source.num_frames - 1) // t - latents
    if max_offset < 2:
        raise UserError(f"data.seconds is too short for windows of {latents} latents; raise it")
    far_offset = int(np.random.default_rng([seed, index, 0xCAC4E]).integers(2, max_offset + 1))
    first_ids = _window_frames(t, 1, latents)
    far_ids = _window_frames(t, far_offset, latents)
    pixels, timeline = source.frames(index, first_ids + far_ids)  # (3, F1 + F2, H, W)
    n1 = len(first_ids)
    # bf16 autocast on the CPU: 2.5x faster than float32 here, and the cache stores bf16 anyway
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        first = codec.encode(pixels[None, :, :n1])[0].float()  # (C, 1 + L, h, w): start + window
        far = codec.encode(pixels[None, :, n1:])[0, :, 1:].float()  # (C, L, h, w)
    return {
        "start": first[:, :1],
        "first": first[:, 1:],
        "far": far,
        "far_offset": far_offset,
        "timeline": timeline,
    }


def build_latent_cache(
    codec: Codec,
    out: str | os.PathLike,
    source: Any,
    *,
    videos: int,
    clip_latents: int,
    seconds: float,
    size: int,
    fps: float,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Encode the first `videos` videos of `source` into `out` (resumes a partial build).
    `source` is the run's `framepack.train.data.WorldSource(seconds, size, fps, seed, videos)`
    (any source with `num_frames` and `frames(index, frame_ids)`); the other arguments are what
    `cache.json` records and a run's config is checked against."""
    root = Path(out)
    meta = {
        "codec": codec.config(),
        "videos": videos,
        "clip_latents": clip_latents,
        "seconds": seconds,
        "size": size,
        "fps": fps,
        "seed": seed,
        "shard": SHARD,
    }
    if (root / META_NAME).is_file():
        if json.loads((root / META_NAME).read_text()) != meta:
            raise UserError(f"{root} holds a latent cache built with other settings; choose another --out")
    elif root.exists() and any(root.iterdir()):
        raise UserError(f"{root} is not empty and holds no latent cache; choose another --out")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / META_NAME, meta)
    for s, start in enumerate(range(0, videos, SHARD)):
        stem = root / f"shard-{s:05d}"
        if stem.with_suffix(".json").is_file():
            continue
        items = []
        for i in range(start, min(videos, start + SHARD)):
            items.append(encode_video(source, codec, i, clip_latents, seed))
            if progress:
                progress(i + 1, videos)
        _save_shard(stem, items)
    return root


def _save_shard(stem: Path, items: list[dict[str, Any]]) -> None:
    tensors = {
        k: torch.stack([it[k] for it in items]).to(torch.bfloat16).contiguous()
        for k in ("start", "first", "far")
    }
    tensors["far_offset"] = torch.tensor([it["far_offset"] for it in items], dtype=torch.int64)
    tmp = stem.with_name(stem.name + ".safetensors.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, stem.with_suffix(".safetensors"))
    atomic_write_json(stem.with_suffix(".json"), {"timelines": [it["timeline"] for it in items]})


class LatentSource:
    """The training videos of a latent cache: `window(...)` returns encoded windows directly."""

    def __init__(self, path: str | os.PathLike) -> None:
        root = Path(path)
        if not (root / META_NAME).is_file():
            raise UserError(f"data.path {root}: no latent cache there (build one with framepack codec cache)")
        self.meta = json.loads((root / META_NAME).read_text())
        parts: dict[str, list[Tensor]] = {"start": [], "first": [], "far": [], "far_offset": []}
        self.timelines: list[list[tuple[float, str]]] = []
        shards = sorted(root.glob("shard-*.json"))
        for shard in shards:
            tensors = load_file(str(shard.with_suffix(".safetensors")))
            for k in parts:
                parts[k].append(tensors[k])
            self.timelines += [
                [(float(a), str(b)) for a, b in tl] for tl in json.loads(shard.read_text())["timelines"]
            ]
        if not shards:
            raise UserError(f"data.path {root}: the latent cache holds no finished shard; build it first")
        self.tensors = {k: torch.cat(v) for k, v in parts.items()}
        self.num_frames = max(1, round(self.meta["seconds"] * self.meta["fps"]))

    def __len__(self) -> int:
        return len(self.timelines)

    def captions(self, count: int) -> list[str]:
        return [text for tl in self.timelines[:count] for _, text in tl]

    def window(
        self, index: int, gen: torch.Generator, follow_start: bool, needed: int
    ) -> tuple[Tensor, Tensor, list[tuple[float, str]]]:
        """As `sample_window`: latents (C, 1 + needed, h, w) float32, indices (1 + needed,), captions."""
        far = not follow_start and bool(torch.rand((), generator=gen) < 0.5)
        offset = int(self.tensors["far_offset"][index]) if far else 1
        window = self.tensors["far" if far else "first"][index, :, :needed]
        latents = torch.cat([self.tensors["start"][index], window], dim=1).float()
        indices = torch.tensor([0, *range(offset, offset + needed)], dtype=torch.int64)
        return latents, indices, self.timelines[index]
