"""Known-answer tests for the flow-matching samplers (framepack/sampling.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from framepack.sampling import (
    batched_cfg_velocity,
    calculate_mu,
    cfg_velocity,
    distilled_guidance,
    get_sigmas,
    rescale_cfg,
    sample_euler,
    sample_unipc,
)

# ---------------------------------------------------------------------------------------------
# Toy fields


def straight_field(x0: torch.Tensor):
    """Velocity of straight paths ending at a fixed x0: x - x0 = sigma * (noise - x0)."""
    return lambda x, sigma: (x - x0) / sigma


class GaussianField:
    """Exact flow-matching velocity for data x0 ~ N(mu, s^2) per element (non-linear in sigma).

    The ODE is solved in closed form: x_sigma = (1 - sigma) mu + std(sigma) z, with
    std(sigma) = sqrt((1 - sigma)^2 s^2 + sigma^2) and z the noise at sigma = 1.
    """

    def __init__(self, mu: float = 0.7, s: float = 0.3):
        self.mu, self.s = mu, s

    def std(self, sigma: float) -> float:
        return math.sqrt((1 - sigma) ** 2 * self.s**2 + sigma**2)

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        slope = (sigma - (1 - sigma) * self.s**2) / self.std(sigma) ** 2
        return -self.mu + slope * (x - (1 - sigma) * self.mu)

    def solution(self, noise: torch.Tensor) -> torch.Tensor:
        return self.mu + self.s * noise


def noise(shape=(2, 3, 4), seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# Sigma schedules


def test_sigmas_unshifted_is_linspace():
    for kwargs in ({}, {"shift": 1.0}, {"mu": 0.0}):
        assert torch.allclose(get_sigmas(10, **kwargs), torch.linspace(1, 0, 11), atol=1e-7)


@pytest.mark.parametrize("shift", [0.5, 3.0, 7.0])
def test_sigmas_fixed_shift_formula(shift):
    sig = torch.linspace(1, 0, 26, dtype=torch.float64)
    expected = shift * sig / (1 + (shift - 1) * sig)
    got = get_sigmas(25, shift=shift)
    assert torch.allclose(got.double(), expected, atol=1e-6)
    # FLUX form e^mu / (e^mu + 1/sigma - 1) with mu = ln(shift), away from sigma = 0.
    flux = math.exp(math.log(shift)) / (math.exp(math.log(shift)) + (1 / sig[:-1] - 1))
    assert torch.allclose(got[:-1].double(), flux, atol=1e-6)
    assert got[0] == 1.0 and got[-1] == 0.0


def test_mu_interpolation_and_cap():
    assert calculate_mu(256, max_exp_shift=None) == pytest.approx(0.5)
    assert calculate_mu(4096, max_exp_shift=None) == pytest.approx(1.15)
    assert calculate_mu(2176, max_exp_shift=None) == pytest.approx(0.825)
    # Released demo: 9 latent frames of 80x80 at patch 2x2 -> 14400 tokens -> capped at ln 7.
    assert calculate_mu(9 * 80 * 80 // 4) == pytest.approx(math.log(7.0))
    assert torch.allclose(get_sigmas(25, seq_len=14400), get_sigmas(25, shift=7.0))
    assert calculate_mu(1000) < math.log(7.0)


def test_sigmas_reject_conflicting_arguments():
    with pytest.raises(ValueError, match="at most one"):
        get_sigmas(5, shift=2.0, mu=1.0)
    with pytest.raises(ValueError, match="steps"):
        get_sigmas(0)


# ---------------------------------------------------------------------------------------------
# Exactness on straight paths


SAMPLERS = [
    ("euler", lambda v, x, s: sample_euler(v, x, s)),
    *[
        (
            f"unipc-{variant}-o{order}",
            lambda v, x, s, o=order, b=variant: sample_unipc(v, x, s, order=o, variant=b),
        )
        for variant in ("bh1", "bh2")
        for order in (1, 2, 3)
    ],
]


@pytest.mark.parametrize(("name", "sampler"), SAMPLERS)
@pytest.mark.parametrize("steps", [1, 2, 3, 25])
def test_straight_paths_are_integrated_exactly(name, sampler, steps):
    x0 = noise(seed=1).float()
    x1 = noise(seed=2).float()
    out = sampler(straight_field(x0), x1, get_sigmas(steps, shift=7.0))
    assert torch.allclose(out, x0, atol=1e-5), name


# ---------------------------------------------------------------------------------------------
# Reference: an independent re-statement of the released FramePack UniPC (uni_pc_fm.py), float64


def reference_unipc(field, x, sigmas, order=3, variant="bh1"):
    """Plain numpy restatement: lambda = -log(sigma), data prediction, one call per step."""
    sig = np.asarray(sigmas, dtype=np.float64)
    n = len(sig) - 1
    p = min(order, n - 1)
    x = x.numpy().astype(np.float64)
    den = lambda x, s: x - s * field(torch.from_numpy(x), float(s)).numpy()  # noqa: E731
    ms, ts = [den(x, sig[0])], [sig[0]]
    for i in range(1, n):
        k = min(i, p)
        t, t0, m0 = sig[i], ts[-1], ms[-1]
        h = np.log(t0) - np.log(t)
        hh = -h
        rks = [(np.log(t0) - np.log(ts[-(j + 1)])) / h for j in range(1, k)] + [1.0]
        d1 = [(ms[-(j + 1)] - m0) / rks[j - 1] for j in range(1, k)]
        bh = hh if variant == "bh1" else np.expm1(hh)
        # phi recursion: g_1 = (e^hh - 1)/hh - 1, g_{j+1} = g_j/hh - 1/(j+1)!, b_j = g_j j!/B(h)
        g, b = np.expm1(hh) / hh - 1, []
        for j in range(1, k + 1):
            b.append(g * math.factorial(j) / bh)
            g = g / hh - 1 / math.factorial(j + 1)
        R = np.array([[rk**j for rk in rks] for j in range(k)])
        xb = (t / t0) * x - np.expm1(hh) * m0
        if k == 1:
            rp, rc = [], [0.5]
        elif k == 2:
            rp, rc = [0.5], np.linalg.solve(R, b)
        else:
            rp, rc = np.linalg.solve(R[:-1, :-1], b[:-1]), np.linalg.solve(R, b)
        xp = xb - bh * sum(r * d for r, d in zip(rp, d1)) if d1 else xb
        mt = den(xp, t)
        x = xb - bh * (sum(r * d for r, d in zip(rc[:-1], d1)) + rc[-1] * (mt - m0))
        ms, ts = [*ms, mt][-p:], [*ts, t][-p:]
    return torch.from_numpy(ms[-1])


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize(("steps", "order"), [(25, 3), (25, 2), (8, 3), (3, 3), (2, 3)])
def test_unipc_matches_reference_restatement(variant, steps, order):
    field = GaussianField()
    x1 = noise()
    sigmas = get_sigmas(steps, shift=7.0).double()
    ours = sample_unipc(field, x1, sigmas, order=order, variant=variant)
    ref = reference_unipc(field, x1, sigmas, order=order, variant=variant)
    assert torch.allclose(ours, ref, atol=1e-10)


def released_unipc_float32(field, x, sigmas, variant="bh1"):
    """The released sampler's arithmetic (uni_pc_fm.py): coefficients in float32 tensors.

    log, expm1, the rk ratios, R, b and the solves all run in float32, as `FlowMatchUniPC.update_fn`
    does on float32 sigmas; the model is the x0 (data) prediction of `field`.
    """
    sig = sigmas.float()
    order = min(3, len(sig) - 2)
    den = lambda x, t: x - t * field(x, float(t))  # noqa: E731
    ms, ts = [den(x, sig[0])], [sig[0]]
    for i in range(1, len(sig) - 1):
        k, t = min(i, order), sig[i]
        lam0 = -torch.log(ts[-1])
        h = -torch.log(t) - lam0
        rks = [((-torch.log(ts[-(j + 1)]) - lam0) / h) for j in range(1, k)] + [torch.tensor(1.0)]
        d1s = [(ms[-(j + 1)] - ms[-1]) / rks[j - 1] for j in range(1, k)]
        rks = torch.stack(rks)
        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_k, factorial = h_phi_1 / hh - 1, 1
        b_h = hh if variant == "bh1" else torch.expm1(hh)
        r, b = [], []
        for j in range(1, k + 1):
            r.append(torch.pow(rks, j - 1))
            b.append(h_phi_k * factorial / b_h)
            factorial *= j + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        r, b = torch.stack(r), torch.stack(b)
        rhos_c = torch.tensor([0.5]) if k == 1 else torch.linalg.solve(r, b)
        x_base = (t / ts[-1]) * x - h_phi_1 * ms[-1]
        x_pred = x_base
        if d1s:  # the predictor
            rhos_p = torch.tensor([0.5]) if k == 2 else torch.linalg.solve(r[:-1, :-1], b[:-1])
            x_pred = x_base - b_h * sum(rho * d for rho, d in zip(rhos_p, d1s))
        m_t = den(x_pred, t)
        corr = sum(rho * d for rho, d in zip(rhos_c[:-1], d1s)) if d1s else 0
        x = x_base - b_h * (corr + rhos_c[-1] * (m_t - ms[-1]))
        ms, ts = [*ms, m_t][-order:], [*ts, t][-order:]
    return ms[-1]


def test_unipc_float64_coefficients_against_the_released_float32():
    """Ours (float64 coefficients) and the released arithmetic (float32) on the released schedule.

    On float32 data, as in generation, the two differ by a few float32 ulps (3.6e-7 here). The
    coefficients alone (float64 data): ours agree with the float64 re-statement to 1e-15, the
    released float32 ones to 1.9e-7 (docs/sampling.md).
    """
    field = GaussianField()
    x1 = noise(shape=(4, 16, 8, 8), seed=3)
    sigmas = get_sigmas(25, shift=7.0)  # float32, as the demo's
    exact = reference_unipc(field, x1, sigmas.double())  # float64 throughout
    ours32 = sample_unipc(field, x1.float(), sigmas)
    released32 = released_unipc_float32(field, x1.float(), sigmas)
    assert 0 < (ours32 - released32).abs().max() < 1e-6
    ours64 = (sample_unipc(field, x1, sigmas.double()) - exact).abs().max()
    released64 = (released_unipc_float32(field, x1, sigmas) - exact).abs().max()
    assert ours64 < 1e-12 and 1e-8 < released64 < 1e-6


def _transformer_field(dtype: torch.dtype):
    """A tiny random PackedTransformer as a velocity field (B=1, 3 latent frames of 8x8)."""
    from framepack.models import PackedTransformer, TransformerConfig

    torch.manual_seed(0)
    cfg = dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1,
               num_single_layers=1, num_refiner_layers=1, text_embed_dim=24, pooled_projection_dim=12,
               rope_axes_dim=(4, 6, 6))  # fmt: skip
    model = PackedTransformer(TransformerConfig(**cfg)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * 0.2)
    model.to(dtype)
    g = torch.Generator().manual_seed(1)
    text, pooled = torch.randn(1, 7, 24, generator=g), torch.randn(1, 12, generator=g)
    mask, indices = torch.ones(1, 7, dtype=torch.bool), torch.arange(3)[None]

    def field(x, sigma):
        t = torch.tensor([float(sigma) * 1000], dtype=dtype)
        with torch.no_grad():
            return model(x, t, text.to(dtype), mask, pooled.to(dtype), indices, guidance=t.new_tensor([1e4]))

    return field, torch.randn(1, 4, 3, 8, 8, generator=g)


def test_unipc_float32_coefficients_on_transformer_velocities():
    """On a transformer's velocities the released float32 coefficients cost far more than ulps.

    The corrector's weights come from nested `h_phi / hh - 1` differences with h ~ 0.007 at the
    first steps (shift 7): in float32 they cancel and lose most of their digits. On the smooth
    Gaussian field above this shows as 3.6e-7; on a tiny random transformer (velocities that
    change faster between steps) the released arithmetic ends rel 2.9e-3 from the float64
    sample, ours 4.0e-7 (`pytest tests/test_sampling.py -s -k transformer_velocities`).
    """
    field32, x1 = _transformer_field(torch.float32)
    field64, _ = _transformer_field(torch.float64)
    sigmas = get_sigmas(25, shift=7.0)
    exact = reference_unipc(field64, x1.double(), sigmas.double())
    ours = sample_unipc(field32, x1, sigmas)
    released = released_unipc_float32(field32, x1, sigmas)
    ours_rel = float((ours - exact).norm() / exact.norm())
    released_rel = float((released - exact).norm() / exact.norm())
    print(f"float64 coefficients rel {ours_rel:.2e}, released float32 rel {released_rel:.2e}")
    assert ours_rel < 1e-5 and released_rel > 1e-4


def test_unipc_one_step_returns_clean_estimate():
    field = GaussianField()
    x1 = noise()
    out = sample_unipc(field, x1, get_sigmas(1).double())
    assert torch.allclose(out, x1 - field(x1, 1.0))


def test_one_model_call_per_step_and_callbacks():
    field = GaussianField()
    calls, seen = [], []

    def counted(x, sigma):
        calls.append(sigma)
        return field(x, sigma)

    sigmas = get_sigmas(25, shift=7.0).double()
    sample_unipc(counted, noise(), sigmas, callback=lambda i, x, x0: seen.append(i))
    assert len(calls) == 25 and seen == list(range(25))
    assert calls == pytest.approx(sigmas[:-1].tolist())


# ---------------------------------------------------------------------------------------------
# Convergence order on a non-linear field


def error_slope(sampler, steps=(32, 64, 128, 256)) -> float:
    field = GaussianField(s=0.8)
    x1 = noise(shape=(64,))
    exact = field.solution(x1)
    errs = [float((sampler(field, x1, get_sigmas(n).double()) - exact).abs().max()) for n in steps]
    return -np.polyfit(np.log(steps), np.log(errs), 1)[0]


def test_convergence_orders():
    euler = error_slope(sample_euler)
    unipc1 = error_slope(lambda v, x, s: sample_unipc(v, x, s, order=1))
    unipc2 = error_slope(lambda v, x, s: sample_unipc(v, x, s, order=2))
    unipc3 = error_slope(lambda v, x, s: sample_unipc(v, x, s, order=3))
    assert 0.9 < euler < 1.1
    # The corrector lifts order 1 to about 2 (UniC, Zhao et al. 2023 Sec. 3.1). Orders 2 and 3 stay
    # near 2: the last interval is a first-order step to sigma = 0 (log 0 is never taken), whose
    # local error O(h^2) caps the global order.
    assert unipc1 > 1.7
    for slope in (unipc2, unipc3):
        assert 1.9 < slope < 2.6


@pytest.mark.parametrize(("shift", "factor"), [(1.0, 4.0), (7.0, 2.0)])
def test_unipc_beats_euler_at_25_steps(shift, factor):
    field = GaussianField(s=0.8)
    x1 = noise(shape=(64,))
    exact = field.solution(x1)
    sigmas = get_sigmas(25, shift=shift).double()
    err_euler = (sample_euler(field, x1, sigmas) - exact).abs().max()
    err_unipc = (sample_unipc(field, x1, sigmas) - exact).abs().max()
    assert err_unipc * factor < err_euler


# ---------------------------------------------------------------------------------------------
# Guidance wrappers


def test_cfg_scale_one_never_calls_uncond():
    def uncond(x, sigma):
        raise AssertionError("uncond must not be called at scale 1")

    cond = lambda x, sigma: x * 2  # noqa: E731
    guided = cfg_velocity(cond, uncond, scale=1.0, rescale=0.7)
    x = noise()
    assert torch.equal(guided(x, 0.5), x * 2)
    sample_euler(guided, x, get_sigmas(3))


def test_cfg_formula_and_rescale_zero():
    x = noise()
    cond = lambda x, sigma: x + 1  # noqa: E731
    uncond = lambda x, sigma: 0.5 * x  # noqa: E731
    v = cfg_velocity(cond, uncond, scale=4.0)(x, 0.3)
    assert torch.allclose(v, 0.5 * x + 4.0 * (x + 1 - 0.5 * x))
    assert torch.equal(cfg_velocity(cond, uncond, scale=4.0, rescale=0.0)(x, 0.3), v)


def test_rescale_matches_conditional_std():
    v_cond = noise(seed=3)
    v_cfg = 5 * noise(seed=4) + 2
    out = rescale_cfg(v_cfg, v_cond, 1.0)
    assert torch.allclose(out.flatten(1).std(1), v_cond.flatten(1).std(1))
    half = rescale_cfg(v_cfg, v_cond, 0.5)
    assert torch.allclose(half, 0.5 * out + 0.5 * v_cfg)


def test_batched_cfg_equals_two_calls():
    cond = lambda x, sigma: torch.sin(x) * sigma  # noqa: E731
    uncond = lambda x, sigma: x**2  # noqa: E731
    batch_sizes = []

    def both(x2, sigma):
        batch_sizes.append(x2.shape[0])
        half = x2.shape[0] // 2
        return torch.cat([cond(x2[:half], sigma), uncond(x2[half:], sigma)])

    x = noise()
    a = batched_cfg_velocity(both, 3.0, rescale=0.3)(x, 0.4)
    b = cfg_velocity(cond, uncond, 3.0, rescale=0.3)(x, 0.4)
    assert torch.allclose(a, b) and batch_sizes == [4]
    assert batched_cfg_velocity(both, 1.0) is both


def test_distilled_guidance_input():
    g = distilled_guidance(10.0, 3)
    assert g.shape == (3,) and torch.all(g == 10000.0)


def test_invalid_sampler_arguments():
    with pytest.raises(ValueError, match="order"):
        sample_unipc(lambda x, s: x, noise(), get_sigmas(3), order=4)
    with pytest.raises(ValueError, match="variant"):
        sample_unipc(lambda x, s: x, noise(), get_sigmas(3), variant="bh3")


def test_x0_to_velocity_matches_the_flow_convention():
    from framepack.sampling import x0_to_velocity

    x0, noise = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    sigma = torch.tensor([0.3, 0.8])
    x = (1 - sigma.view(-1, 1, 1)) * x0 + sigma.view(-1, 1, 1) * noise
    assert torch.allclose(x0_to_velocity(x, x0, sigma), noise - x0, atol=1e-5)
    assert torch.allclose(x0_to_velocity(x[:1], x0[:1], 0.3), noise[:1] - x0[:1], atol=1e-5)
    # sigma is clamped: no division blow-up at the end of the schedule
    assert torch.isfinite(x0_to_velocity(x, x0, torch.zeros(2))).all()
