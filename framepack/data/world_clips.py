"""Training and evaluation clips of the procedural world, as a torch Dataset.

Item i of a split is a fresh world and a random camera script, both drawn from one clip seed, so
every item is deterministic and independent of worker order. Splits are disjoint seed ranges:
training clips use seeds in `SPLITS["train"]`, evaluation clips seeds in `SPLITS["eval"]`; the
ranges never overlap, so held-out clips show worlds (maps, objects) never seen in training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from framepack.data.world import Clip, World, WorldConfig, render_clip
from framepack.data.world_script import caption_at, format_timeline, random_script

SPLITS: dict[str, range] = {"train": range(0, 1 << 31), "eval": range(1 << 31, (1 << 31) + (1 << 24))}
CAPTION_MODES = ("last", "first", "timeline")


class WorldClips(torch.utils.data.Dataset):
    """Clips of `num_frames` frames at `size` x `size` pixels and `fps` frames per second.

    `dataset[i]` returns a dict:
      pixels   float32 (3, F, H, W) in [-1, 1]
      caption  str: the caption active at the last frame (the target section of a forward,
               next-section model), at the first frame, or the whole timeline (`caption_mode`)
      timeline str: the prompt timeline "0s: text; 1.5s: text"
      seed     int: the clip seed (world seed and script seed)
    `seed` shifts which seeds of the split are used, so two datasets with different seeds draw
    (almost surely) different clips; `length` is the nominal epoch size.
    """

    def __init__(
        self,
        num_frames: int,
        size: int = 64,
        fps: float = 30,
        *,
        split: str = "train",
        length: int = 100_000,
        seed: int = 0,
        config: WorldConfig | None = None,
        caption_mode: str = "last",
        script_options: dict[str, Any] | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        if caption_mode not in CAPTION_MODES:
            raise ValueError(f"caption_mode must be one of {CAPTION_MODES}, got {caption_mode!r}")
        if num_frames < 1 or size < 8 or fps <= 0 or length < 1:
            raise ValueError(
                f"need num_frames >= 1, size >= 8, fps > 0, length >= 1; got {num_frames}, {size}, {fps}, {length}"
            )
        self.num_frames, self.size, self.fps = num_frames, size, fps
        self.split, self.length, self.seed = split, length, seed
        self.config = config or WorldConfig()
        self.caption_mode = caption_mode
        self.script_options = dict(script_options or {})

    def __len__(self) -> int:
        return self.length

    def clip_seed(self, index: int) -> int:
        """The seed of item `index`: a hash of (seed, index) inside this split's seed range."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} clips")
        span = SPLITS[self.split]
        mixed = np.random.SeedSequence([self.seed, index]).generate_state(2, np.uint32)
        return span.start + (int(mixed[0]) << 32 | int(mixed[1])) % len(span)

    def clip(self, index: int) -> Clip:
        """The rendered clip of item `index`, with its captions and ground truth."""
        seed = self.clip_seed(index)
        script = random_script(seed, self.num_frames / self.fps, self.fps, **self.script_options)
        return render_clip(World(seed, self.config), script, self.size, self.fps, self.num_frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip = self.clip(index)
        pixels = torch.from_numpy(clip.frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0  # (3, F, H, W)
        if self.caption_mode == "timeline":
            caption = format_timeline(clip.captions)
        else:
            at = 0.0 if self.caption_mode == "first" else (self.num_frames - 1) / self.fps
            caption = caption_at(clip.captions, at)
        return {
            "pixels": pixels,
            "caption": caption,
            "timeline": format_timeline(clip.captions),
            "seed": clip.seed,
        }
