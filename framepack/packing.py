"""Packing history frames into a bounded transformer context (Sec. 2 of the paper).

CONTRACT (shared by the transformer, training and generation code; keep these names):

- `PackedLevel`: the frames assigned to one compression level.
- `PackedContext`: the levels in *token order* (the released models use coarsest first:
  `[4x | 2x | 1x]`, then the noisy tokens follow inside the transformer).

The rest of this module (schedules, presets, importance rankings, `pack`) is built on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

Kernel = tuple[int, int, int]


@dataclass
class PackedLevel:
    """Frames packed at one level.

    kernel:  patchify kernel (t, h, w) in latent units; the base kernel is (1, 2, 2).
    latents: (B, C, T_l, H, W) the frames of this level, ordered by their frame index.
    indices: (B, T_l) int64, each frame's time (RoPE position); rows may differ.
    """

    kernel: Kernel
    latents: Tensor
    indices: Tensor

    @property
    def num_frames(self) -> int:
        return int(self.latents.shape[2])


@dataclass
class PackedContext:
    """The clean context of one section: levels in token order (coarsest first)."""

    levels: tuple[PackedLevel, ...]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> PackedContext:
        return PackedContext(
            tuple(
                PackedLevel(lv.kernel, lv.latents.to(device=device, dtype=dtype), lv.indices.to(device))
                for lv in self.levels
            )
        )
