"""Self-rollout: history the student generated itself, as `framepack generate` would.

Training on true history and sampling on generated history is FramePack's exposure bias (SPEC
sec. 1). CausVid and Self Forcing train few-step students on their own rollouts; here a share
`self_rollout` of the samples (framepack.distill.labels) gets a packed history of sections the
student generated, in the forward plan, from the true start frame and the sample's caption:
the same plan (framepack.plans), context (framepack.context.plan_context), per-section noise
(framepack.resume.section_generator), grid and Euler steps as the pipeline, so the history
equals what `framepack generate --model STUDENT --plan forward --seed SEED` makes
(tests/test_distill.py checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from framepack.context import plan_context
from framepack.packing import PackedContext, Schedule
from framepack.plans import Plan, make_plan
from framepack.resume import section_generator
from framepack.sampling import sample_euler, x0_to_velocity


@dataclass
class Rollout:
    """What one self-rollout sample was made from (kept for inspection and tests).

    clip: the training video; seed: the generation seed; caption: the prompt of every section;
    sections: how many sections were generated before the trained one; latents: the timeline
    (1, C, 1 + (sections + 1) * window, h, w): the true start frame, the generated sections, then
    the trained section's true latents.
    """

    clip: int
    seed: int
    caption: str
    sections: int
    latents: Tensor


def forward_plan(sections: int, window: int) -> Plan:
    """The forward plan of a start frame and `sections` sections of `window` latents."""
    return make_plan("forward", sections=sections, window=window, mode="general")


@torch.no_grad()
def generate_forward(
    model: nn.Module,
    timeline: Tensor,
    caption: str,
    sections: int,
    schedule: Schedule,
    sigmas: Tensor,
    seed: int,
    *,
    window: int,
    prediction: str = "velocity",
    anchor_gap: int | None = None,
    quantize: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Fill the first `sections` sections of a forward plan on `timeline` (1, C, T, h, w), whose
    position 0 holds the start latent, as the pipeline samples them (Euler on `sigmas`, the
    noise of (seed, section start)). `model` is a `framepack.train.components.Denoiser`'s
    modules: `.transformer` and `.text_encoder`. Returns the filled timeline (a copy)."""
    timeline = timeline.clone()
    embeds = model.text_encoder.encode([caption])
    plan = forward_plan(sections, window)
    for section in plan.sections:
        context = plan_context(
            timeline, section, schedule, "forward", anchor_gap=anchor_gap, quantize=quantize
        )
        velocity = _velocity(model, embeds, context, section.latent_indices, prediction)
        noise_shape = (1, timeline.shape[1], section.stop - section.start, *timeline.shape[3:])
        noise = torch.randn(noise_shape, generator=section_generator(seed, section.start))
        timeline[:, :, section.start : section.stop] = sample_euler(velocity, noise, sigmas).float()
    return timeline


def _velocity(
    model: nn.Module, embeds, context: PackedContext, indices: tuple[int, ...], prediction: str
) -> Callable[[Tensor, float], Tensor]:
    """The student's velocity v(x (1, C, n, h, w), sigma) for one section, as the pipeline's."""
    target = torch.tensor([indices], dtype=torch.int64)

    def velocity(x: Tensor, sigma: float) -> Tensor:
        t = torch.full((1,), sigma * 1000.0)
        out = model.transformer(
            x, t, embeds.states, embeds.mask, embeds.pooled, target, context=context
        ).float()  # (1, C, n, h, w)
        return x0_to_velocity(x, out, sigma) if prediction == "x0" else out

    return velocity
