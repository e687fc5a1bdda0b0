"""Flow-matching samplers as pure functions of a velocity callable (k-diffusion style).

Convention (docs/architecture.md): `x_sigma = (1 - sigma) * x0 + sigma * noise`, the model predicts
the velocity `v = noise - x0`, so the clean estimate at any point is `x0 = x - sigma * v`.

Every sampler has the same signature::

    sample_x(velocity, x, sigmas, *, callback=None, ...) -> Tensor

- `velocity(x, sigma) -> v`: any callable; `x` has the shape of the latents, `sigma` is a Python
  float in [0, 1]. The caller closes over the model, text, packed context and guidance.
- `x`: the starting point at `sigmas[0]` (pure noise when `sigmas[0] == 1`).
- `sigmas`: (steps + 1,) decreasing, ending at 0 (see `get_sigmas`).
- `callback(step, x, x0)`: called once per model evaluation, after the step, with the current
  state and the model's clean estimate (for previews and for stopping a job).

Samplers never see models, text encoders, VAEs or packing. Guidance is a thin wrapper that builds a
velocity callable from others (`cfg_velocity`, `batched_cfg_velocity`).

Distilled guidance (the released HunyuanVideo/FramePack checkpoints): the guidance scale is not a
sampler feature but an *input* of the transformer: `guidance = scale * 1000` of shape (B,), passed
with every call (`distilled_guidance`). The released demo uses 10 and real CFG 1 (off).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Velocity = Callable[[Tensor, float], Tensor]
Callback = Callable[[int, Tensor, Tensor], None]

__all__ = [
    "batched_cfg_velocity",
    "calculate_mu",
    "cfg_velocity",
    "distilled_guidance",
    "get_sigmas",
    "rescale_cfg",
    "sample_euler",
    "sample_unipc",
    "time_shift",
]


# ----------------------------------------------------------------------------------------------
# Sigma schedules


def calculate_mu(
    seq_len: int,
    *,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
    max_exp_shift: float | None = 7.0,
) -> float:
    """Resolution-dependent shift exponent `mu` from the token count of the noisy section.

    Linear in `seq_len` through (base_seq_len, base_shift) and (max_seq_len, max_shift), as FLUX
    and HunyuanVideo do, then capped at `ln(max_exp_shift)`. The released FramePack demo caps at
    ln 7: at its 640-area buckets (9 latent frames of 80x80 -> 14400 tokens) mu hits the cap and
    the effective shift is 7. `max_exp_shift=None` disables the cap.
    """
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    mu = base_shift + slope * (seq_len - base_seq_len)
    if max_exp_shift is not None:
        mu = min(mu, math.log(max_exp_shift))
    return mu


def time_shift(sigmas: Tensor, shift: float) -> Tensor:
    """Shift sigmas toward the noisy end: `s * sigma / (1 + (s - 1) * sigma)`.

    This equals the FLUX form `e^mu / (e^mu + (1 / sigma - 1))` with `s = e^mu`, written so that
    sigma = 0 needs no division by zero. shift = 1 is the identity.
    """
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


def get_sigmas(
    steps: int,
    *,
    shift: float | None = None,
    mu: float | None = None,
    seq_len: int | None = None,
    max_exp_shift: float | None = 7.0,
) -> Tensor:
    """Sigmas `linspace(1, 0, steps + 1)`, time-shifted.

    Give at most one of: `shift` (fixed), `mu` (shift = e^mu), `seq_len` (tokens of the noisy
    section; mu from `calculate_mu`, capped at ln `max_exp_shift` like the released demo). With
    none of them the schedule is unshifted. Returns float32 (steps + 1,), from 1 down to exactly 0.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    given = [
        name for name, value in (("shift", shift), ("mu", mu), ("seq_len", seq_len)) if value is not None
    ]
    if len(given) > 1:
        raise ValueError(f"give at most one of shift, mu, seq_len; got {', '.join(given)}")
    if seq_len is not None:
        mu = calculate_mu(seq_len, max_exp_shift=max_exp_shift)
    if mu is not None:
        shift = math.exp(mu)
    sigmas = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    if shift is not None:
        sigmas = time_shift(sigmas, shift)
    return sigmas.to(torch.float32)


# ----------------------------------------------------------------------------------------------
# Guidance wrappers


def distilled_guidance(scale: float, batch_size: int, device: torch.device | str | None = None) -> Tensor:
    """The transformer's `guidance` input for a guidance-distilled checkpoint: (B,) `scale * 1000`."""
    return torch.full((batch_size,), scale * 1000.0, device=device)


def rescale_cfg(v_cfg: Tensor, v_cond: Tensor, rescale: float) -> Tensor:
    """Guidance rescale (Lin et al. 2023, "Common Diffusion Noise Schedules are Flawed", Sec. 3.4).

    Rescales the guided prediction to the per-sample standard deviation of the conditional one and
    mixes: `rescale * v_cfg * std(v_cond) / std(v_cfg) + (1 - rescale) * v_cfg`. Applied to the
    velocity, as the released FramePack wrapper does. rescale = 0 returns `v_cfg` unchanged.
    """
    if rescale == 0.0:
        return v_cfg
    dims = list(range(1, v_cfg.ndim))
    ratio = v_cond.std(dim=dims, keepdim=True) / v_cfg.std(dim=dims, keepdim=True)
    return rescale * (v_cfg * ratio) + (1.0 - rescale) * v_cfg


def cfg_velocity(cond: Velocity, uncond: Velocity, scale: float, rescale: float = 0.0) -> Velocity:
    """Classifier-free guidance with a negative (or empty) prompt: `u + scale * (c - u)`.

    At scale 1 the conditional velocity is returned as is and `uncond` is never called (half the
    model calls; the released demo runs this way).
    """
    if scale == 1.0:
        return cond

    def guided(x: Tensor, sigma: float) -> Tensor:
        v_cond = cond(x, sigma)
        v_uncond = uncond(x, sigma)
        return rescale_cfg(v_uncond + scale * (v_cond - v_uncond), v_cond, rescale)

    return guided


def batched_cfg_velocity(both: Velocity, scale: float, rescale: float = 0.0) -> Velocity:
    """CFG with one model call: `both(cat([x, x]), sigma)` returns `cat([v_cond, v_uncond])`.

    The caller's `both` runs the conditional rows first, then the unconditional rows, in a batch of
    2B. At scale 1 it is called on B rows only, and must then return the conditional velocity
    (i.e. `both` should look only at the batch size it is given).
    """
    if scale == 1.0:
        return both

    def guided(x: Tensor, sigma: float) -> Tensor:
        v_cond, v_uncond = both(torch.cat([x, x]), sigma).chunk(2)
        return rescale_cfg(v_uncond + scale * (v_cond - v_uncond), v_cond, rescale)

    return guided


# ----------------------------------------------------------------------------------------------
# Samplers


PREDICTIONS = ("velocity", "x0")
MIN_SIGMA_X0 = 0.05


def x0_to_velocity(x: Tensor, x0: Tensor, sigma: Tensor | float, min_sigma: float = MIN_SIGMA_X0) -> Tensor:
    """Velocity `(x - x0) / sigma` of an x0-predicting model (sigma clamped at `min_sigma`).

    Models whose tokens are much wider than their hidden size (e.g. a lossless pixel codec:
    768 values per token at width 128) cannot output the noise part of a velocity through the
    bottleneck, but can output x0, which lies on a low-dimensional manifold ("Back to Basics:
    Let Denoising Generative Models Denoise", Li & He 2025). Such models predict x0 and are
    trained and sampled through this conversion. sigma: float or (B,) for x (B, ...).
    """
    if isinstance(sigma, Tensor):
        sigma = sigma.clamp(min=min_sigma).view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    else:
        sigma = max(float(sigma), min_sigma)
    return (x - x0) / sigma


def sample_euler(
    velocity: Velocity, x: Tensor, sigmas: Tensor, *, callback: Callback | None = None
) -> Tensor:
    """First-order flow-matching ODE solver: `x += (sigma_next - sigma) * v`.

    x: (B, ...) at sigmas[0]. Returns x at sigmas[-1] (the sample when sigmas[-1] == 0).
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        v = velocity(x, sigma)
        x0 = x - sigma * v
        x = x + (sigma_next - sigma) * v
        if callback is not None:
            callback(i, x, x0)
    return x


def _unipc_coefficients(rks: list[float], hh: float, order: int, variant: str) -> tuple[float, Tensor]:
    """UniPC's B(h) and the right-hand side b of `R rho = b` (Zhao et al. 2023, Alg. 1/2).

    hh = -h (h = lambda_t - lambda_prev > 0 in log-SNR-like time). Computed in float64.
    b_i = h_phi_{i+1} * i! / B(h), with h_phi_1 = e^hh - 1 and h_phi_{k+1} = h_phi_k / hh - 1/k!.
    """
    if variant == "bh1":
        b_h = hh
    elif variant == "bh2":
        b_h = math.expm1(hh)
    else:
        raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
    h_phi_k = math.expm1(hh) / hh - 1.0
    factorial = 1
    b = []
    for i in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return b_h, torch.tensor(b, dtype=torch.float64)


def _unipc_step(
    velocity: Velocity,
    x: Tensor,
    x0_history: list[Tensor],
    sigma_history: list[float],
    sigma: float,
    order: int,
    variant: str,
) -> tuple[Tensor, Tensor]:
    """One UniPC predictor + corrector step in data (x0) form, from sigma_history[-1] to sigma.

    Time variable lambda = -log(sigma) (the released FramePack "flow matching UniPC"; note that
    diffusers' UniPCMultistepScheduler uses log((1 - sigma) / sigma) instead, a different
    computation at order >= 2). Returns (x at sigma after correction, x0 estimate at the predictor
    point) - the latter is reused by the next step, so each step costs one model call.
    """
    sigma_prev = sigma_history[-1]
    m0 = x0_history[-1]
    h = math.log(sigma_prev) - math.log(sigma)  # lambda_t - lambda_prev
    rks, d1s = [], []
    for k in range(1, order):
        rk = (math.log(sigma_prev) - math.log(sigma_history[-(k + 1)])) / h
        rks.append(rk)
        d1s.append((x0_history[-(k + 1)] - m0) / rk)
    rks.append(1.0)
    b_h, b = _unipc_coefficients(rks, -h, order, variant)
    r = torch.tensor([[rk ** (i - 1) for rk in rks] for i in range(1, order + 1)], dtype=torch.float64)

    # Exact for a fixed x0 (first-order DDIM in flow form): x_t = (t/s) x + (1 - t/s) x0.
    ratio = sigma / sigma_prev
    x_base = ratio * x + (1.0 - ratio) * m0

    if d1s:
        rhos_p = [0.5] if order == 2 else torch.linalg.solve(r[:-1, :-1], b[:-1]).tolist()
        x_pred = x_base - b_h * sum(rho * d for rho, d in zip(rhos_p, d1s))
    else:
        x_pred = x_base
    x0_t = x_pred - sigma * velocity(x_pred, sigma)

    rhos_c = [0.5] if order == 1 else torch.linalg.solve(r, b).tolist()
    correction = sum(rho * d for rho, d in zip(rhos_c[:-1], d1s)) + rhos_c[-1] * (x0_t - m0)
    return x_base - b_h * correction, x0_t


def sample_unipc(
    velocity: Velocity,
    x: Tensor,
    sigmas: Tensor,
    *,
    order: int = 3,
    variant: str = "bh1",
    callback: Callback | None = None,
) -> Tensor:
    """UniPC multistep predictor-corrector (Zhao et al. 2023) for flow matching, in x0 form.

    Behaves as the released FramePack sampler (`uni_pc_fm.py`, bh1, 25 steps): the order used is
    `min(order, len(sigmas) - 2)`, warming up with orders 1, 2, ...; every step makes exactly one
    model call (steps = len(sigmas) - 1 calls in all); the final step to sigma = 0 returns the
    clean estimate at sigmas[-2] (log 0 is never taken).

    x: (B, ...) at sigmas[0]; order in 1..3; variant "bh1" or "bh2". Returns the sample.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
    steps = len(sigmas) - 1
    order = max(1, min(order, steps - 1))
    x0_history: list[Tensor] = []
    sigma_history: list[float] = []
    for i in range(steps):
        sigma = float(sigmas[i])
        if i == 0:
            x0 = x - sigma * velocity(x, sigma)
        else:
            x, x0 = _unipc_step(velocity, x, x0_history, sigma_history, sigma, min(i, order), variant)
        x0_history = [*x0_history, x0][-order:]
        sigma_history = [*sigma_history, sigma][-order:]
        if callback is not None:
            callback(i, x, x0)
    # Last interval (sigmas[-2] -> 0): the clean estimate, i.e. an exact-for-fixed-x0 step to 0.
    final_sigma = float(sigmas[-1])
    if final_sigma == 0.0:
        return x0_history[-1]
    ratio = final_sigma / sigma_history[-1]
    return ratio * x + (1.0 - ratio) * x0_history[-1]
