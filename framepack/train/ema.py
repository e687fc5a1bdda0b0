"""Exponential moving average of the trained weights (what the bundled model ships).

The decay is set by a half-life counted in training *samples*, as in EDM2/EDM
(`beta = 0.5 ** (batch / halflife)`), with a ramp-up so the half-life is at most a fraction of
the samples seen so far: early in training the average follows the weights closely.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def ema_beta(samples_seen: int, batch: int, halflife_samples: float, rampup: float | None = 0.05) -> float:
    """Decay for one update after `samples_seen` samples with `batch` samples per step."""
    halflife = halflife_samples
    if rampup is not None:
        halflife = min(halflife, samples_seen * rampup)
    return 0.5 ** (batch / max(halflife, 1e-8))


class EMA:
    """Float32 shadow copies of a module's floating-point parameters and buffers.

    Under FSDP the copies are sharded like the parameters (DTensors); `state_dict()` then holds
    shards, which the checkpoint code gathers into full tensors.

    The keys are the module's `state_dict()` keys, so `ema.state_dict()` loads straight into a
    fresh copy of the module (or saves as a checkpoint).
    """

    def __init__(self, module: nn.Module) -> None:
        self.shadow: dict[str, Tensor] = {
            k: v.detach().float().clone() for k, v in module.state_dict().items() if v.is_floating_point()
        }

    @torch.no_grad()
    def update(self, module: nn.Module, beta: float) -> None:
        """shadow = beta * shadow + (1 - beta) * current."""
        for k, v in module.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach().float(), 1.0 - beta)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} keys, e.g. {sorted(missing)[:3]}")
        for k, target in self.shadow.items():
            source = state[k].to(target.dtype)
            if hasattr(target, "device_mesh"):  # an FSDP shard: keep this process's part
                from torch.distributed.tensor import distribute_tensor

                source = distribute_tensor(source, target.device_mesh, target.placements)
            target.copy_(source)

    def copy_to(self, module: nn.Module) -> None:
        """Load the averaged weights into `module` (cast to its dtypes)."""
        current = module.state_dict()
        module.load_state_dict({k: self.shadow.get(k, v).to(v.dtype) for k, v in current.items()})
