"""The prompt-encoder contract.

CONTRACT (shared by the pipeline, training and the transformer; keep these names):

- `PromptEmbeds(states (B, L, D), mask (B, L) bool, pooled (B, D_pool))`; `mask` is True for valid
  tokens and every row has at least one valid token, so attention over the text is always defined.
- `PromptEncoder.encode(prompts: list[str]) -> PromptEmbeds`, one row per prompt, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass
class PromptEmbeds:
    """Encoded prompts.

    states: (B, L, D) per-token states, padded to the longest prompt of the batch.
    mask:   (B, L) bool, True for valid tokens (at least one per row).
    pooled: (B, D_pool) one vector per prompt.
    """

    states: Tensor
    mask: Tensor
    pooled: Tensor

    def __post_init__(self) -> None:
        shape = tuple(self.states.shape)
        if len(shape) != 3 or tuple(self.mask.shape) != shape[:2] or self.mask.dtype != torch.bool:
            raise ValueError(
                f"PromptEmbeds needs states (B, L, D) and a bool mask (B, L); got states "
                f"{tuple(self.states.shape)}, mask {tuple(self.mask.shape)} {self.mask.dtype}"
            )
        if self.pooled.ndim != 2 or self.pooled.shape[0] != shape[0]:
            raise ValueError(
                f"PromptEmbeds.pooled must be (B={shape[0]}, D_pool), got {tuple(self.pooled.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return int(self.states.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> PromptEmbeds:
        """Move to `device`; `dtype` applies to `states` and `pooled` (the mask stays bool)."""
        return PromptEmbeds(
            self.states.to(device=device, dtype=dtype),
            self.mask.to(device=device),
            self.pooled.to(device=device, dtype=dtype),
        )


@runtime_checkable
class PromptEncoder(Protocol):
    """Anything that turns a batch of prompts into `PromptEmbeds`."""

    def encode(self, prompts: list[str]) -> PromptEmbeds:
        """One row per prompt, in order; an empty prompt gives one valid (empty) token."""
        ...
