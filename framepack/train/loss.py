"""Flow-matching loss (rectified flow), as used by HunyuanVideo and FramePack.

Convention (docs/architecture.md): `x_sigma = (1 - sigma) * x0 + sigma * noise`, the model
predicts the velocity `v = noise - x0`, and receives `timestep = sigma * 1000`.

Timesteps are drawn per sample from a base density on (0, 1) and then *shifted* toward high
noise with `sigma' = shift * sigma / (1 + (shift - 1) * sigma)` (SD3 / HunyuanVideo time shift;
the released FramePack sampler uses the same map with shift 7 at inference). Larger frames carry
more redundant pixels, so they need more training signal at high noise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

SIGMA_KINDS = ("logit-normal", "uniform")

# A velocity model closed over its conditioning: (x_sigma (B,C,T,h,w), sigma (B,)) -> velocity.
VelocityFn = Callable[[Tensor, Tensor], Tensor]


def shift_sigma(sigma: Tensor, shift: float) -> Tensor:
    """Time shift `shift * s / (1 + (shift - 1) * s)`; identity at shift 1, keeps 0 and 1 fixed."""
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def sample_sigmas(
    batch: int,
    generator: torch.Generator,
    kind: str = "logit-normal",
    shift: float = 1.0,
    mean: float = 0.0,
    std: float = 1.0,
) -> Tensor:
    """Draw `batch` noise levels in (0, 1) as float32 `(batch,)`.

    kind "logit-normal": sigmoid(mean + std * N(0, 1)) (SD3's default density);
    kind "uniform": U(0, 1). Both are then time-shifted by `shift`.
    """
    if kind == "logit-normal":
        base = torch.sigmoid(mean + std * torch.randn(batch, generator=generator))
    elif kind == "uniform":
        base = torch.rand(batch, generator=generator)
    else:
        raise ValueError(f"sigma sampling kind must be one of {SIGMA_KINDS}, got {kind!r}")
    return shift_sigma(base.clamp(1e-5, 1.0 - 1e-5), shift)


def noisy_latents(x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
    """`(1 - sigma) * x0 + sigma * noise`; x0, noise (B, C, T, h, w), sigma (B,)."""
    s = sigma.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1.0 - s) * x0 + s * noise


def flow_matching_loss(velocity: VelocityFn, x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
    """Per-sample mean squared velocity error `(B,)`.

    x0: (B, C, T, h, w) clean target latents; noise: same shape N(0, 1); sigma: (B,) in (0, 1).
    The target is the straight-line velocity `noise - x0`.
    """
    prediction = velocity(noisy_latents(x0, noise, sigma), sigma)  # (B, C, T, h, w)
    error = (prediction.float() - (noise - x0).float()) ** 2
    return error.flatten(1).mean(dim=1)
