"""Few-step targets: the teacher's guided solution over one interval of the student's grid.

The student samples a section in N Euler steps on the grid `s_0 = 1 > s_1 > ... > s_N = 0`
(`get_sigmas(N, shift)`). Its velocity at `(x, s_i)` is trained to be the straight line to where
the teacher's guided ODE carries `x` at `s_{i+1}` (a flow map on a fixed grid: progressive
distillation collapsed to one round, Salimans & Ho 2022, as PeRFlow's piecewise-linear windows,
Yan et al. 2024; the guidance folded in as in Meng et al. 2023):

    v_target = (Phi_teacher(x, s_i -> s_{i+1}) - x) / (s_{i+1} - s_i)

so one Euler step of the student lands where `teacher_steps / N` steps of the teacher do. Pure
functions of a velocity callable (framepack.sampling's convention); no model is seen here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from framepack.sampling import Velocity, get_sigmas, sample_euler, sample_unipc


def student_grid(steps: int, shift: float) -> Tensor:
    """The student's noise levels (steps + 1,), 1 -> 0: exactly what `framepack generate` uses
    for a bundle with this `steps` and `shift`."""
    return get_sigmas(steps, shift=shift)


def teacher_interval(grid_steps: int, inner_steps: int, shift: float, interval: int) -> Tensor:
    """The teacher's noise levels over the student's interval `interval` (inner_steps + 1,):
    a slice of the teacher's own schedule `get_sigmas(grid_steps * inner_steps, shift)`, whose
    every `inner_steps`-th level is a level of the student's grid."""
    fine = get_sigmas(grid_steps * inner_steps, shift=shift)
    return fine[interval * inner_steps : (interval + 1) * inner_steps + 1]


def solve_interval(velocity: Velocity, x: Tensor, sigmas: Tensor, sampler: str = "unipc") -> Tensor:
    """x (B, ...) at sigmas[0] carried to sigmas[-1] by the teacher's sampler (UniPC or Euler)."""
    if sampler == "unipc":
        return sample_unipc(velocity, x, sigmas)
    return sample_euler(velocity, x, sigmas)


def flow_map_velocity(x: Tensor, x_next: Tensor, sigma: float, sigma_next: float) -> Tensor:
    """The velocity whose Euler step from (x, sigma) lands on x_next at sigma_next."""
    return (x_next - x) / (sigma_next - sigma)


def as_flow_matching_pair(x: Tensor, velocity: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """(x0, noise) with `(1 - sigma) x0 + sigma noise = x` and `noise - x0 = velocity`, so the
    flow-matching loss (framepack.train.loss) at `sigma` trains the model's velocity at x toward
    `velocity` (and an x0-predicting model's output toward x0 = x - sigma * velocity)."""
    return x - sigma * velocity, x + (1.0 - sigma) * velocity


@torch.no_grad()
def distill_pair(
    teacher: Velocity,
    x: Tensor,
    grid: Tensor,
    interval: int,
    inner: Tensor,
    sampler: str = "unipc",
) -> tuple[Tensor, Tensor]:
    """The flow-matching pair (x0, noise) that trains the student at (x, grid[interval]) toward
    the teacher's guided solution over the interval (`inner`: its teacher levels, from
    `teacher_interval`). x (B, C, T, h, w) at grid[interval]."""
    sigma, sigma_next = float(grid[interval]), float(grid[interval + 1])
    x_next = solve_interval(teacher, x, inner, sampler)
    return as_flow_matching_pair(x, flow_map_velocity(x, x_next, sigma, sigma_next), sigma)
