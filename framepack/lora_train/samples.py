"""Training sections drawn from a latent cache, deterministic per (seed, step, micro-batch).

Every sample draws its clip, section, noise level and noise from one generator keyed by
`(seed, step, micro_index)` (framepack.train.data.sample_generator), so a resumed run sees exactly
the data of an uninterrupted one and N processes together see what one process sees (process r
takes micro-batches r, r + N, ...).

Released mode: a cached clip of `1 + n` latents is a released job of `k = n // window` sections
after its start frame (`framepack.plans.make_plan(..., mode="released")`); one of its sections is
drawn and its context is built from the clip's true latents in that section's exact index layout
(teacher forcing: the context frames are the real ones the sampler would have generated, missing
ones zero latents, as at inference). General mode: a layout and a section are drawn with
framepack.train.layouts and packed with the configured schedule at true frame times.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from framepack.context import released_context
from framepack.errors import UserError
from framepack.hunyuan.latent_cache import CachedClip, LatentCache
from framepack.lora_train.config import LoraTrainConfig
from framepack.packing import PackedContext, parse_schedule
from framepack.plans import Plan, make_plan
from framepack.train.data import sample_generator
from framepack.train.layouts import build_context, draw_layout
from framepack.train.loss import sample_sigmas


@dataclass
class LoraSample:
    """One section to denoise (batch 1).

    target (1, C, w, h, w') clean latents and target_indices (1, w) their RoPE times; context
    the packed clean levels; text_states (1, L, D_text), pooled (1, D_pool), image_embeds
    (1, N, D_img); sigma (1,) and noise like target.
    """

    target: Tensor
    target_indices: Tensor
    context: PackedContext
    text_states: Tensor
    pooled: Tensor
    image_embeds: Tensor
    sigma: Tensor
    noise: Tensor

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> LoraSample:
        def move(t: Tensor) -> Tensor:
            return t.to(device, dtype if t.is_floating_point() else t.dtype)

        return LoraSample(
            move(self.target), move(self.target_indices), self.context.to(device, dtype),
            move(self.text_states), move(self.pooled), move(self.image_embeds), move(self.sigma), move(self.noise),
        )  # fmt: skip


@functools.lru_cache(maxsize=64)
def released_plan(strategy: str, sections: int, window: int) -> Plan:
    """The released plan of a clip: start frame + `sections` sections of `window` latents."""
    return make_plan(strategy, sections=sections, window=window, mode="released")


def _released_section(
    config: LoraTrainConfig, clip: CachedClip, gen: torch.Generator
) -> tuple[PackedContext, Tensor, Tensor]:
    layout = config.layouts[int(torch.randint(len(config.layouts), (), generator=gen))]
    sections = (clip.latents.shape[1] - 1) // config.window
    plan = released_plan(layout, sections, config.window)
    section = plan[int(torch.randint(len(plan), (), generator=gen))]
    latents = clip.latents[None, :, : plan.total]  # (1, C, 1 + k w, h, w)
    if config.history_noise > 0:
        noise = torch.randn(latents.shape, generator=gen) * config.history_noise
        noise[:, :, 0] = 0  # the start frame (the user's image) stays clean
        latents = latents + noise
    target = clip.latents[None, :, section.start : section.stop]
    return released_context(latents, section.levels), target, torch.tensor([section.latent_indices])


def _general_section(
    config: LoraTrainConfig, clip: CachedClip, gen: torch.Generator
) -> tuple[PackedContext, Tensor, Tensor]:
    length = clip.latents.shape[1]
    lay = draw_layout(config.layouts, length, config.window, gen)
    indices = torch.arange(length, dtype=torch.int64)
    return build_context(
        clip.latents[None], indices, lay, parse_schedule(config.schedule), config.history_noise, gen
    )


def draw_sample(config: LoraTrainConfig, cache: LatentCache, step: int, micro_index: int) -> LoraSample:
    """The section of global micro-batch `micro_index` of optimizer step `step`."""
    gen = sample_generator(config.seed, step, micro_index)
    sigma = sample_sigmas(1, gen, config.sigma_kind, config.sigma_shift, config.sigma_mean, config.sigma_std)
    clip = cache[int(torch.randint(len(cache), (), generator=gen))]
    draw = _released_section if config.mode == "released" else _general_section
    context, target, target_indices = draw(config, clip, gen)
    noise = torch.randn(target.shape, generator=gen)
    return LoraSample(
        target,
        target_indices,
        context,
        clip.text_states[None],
        clip.pooled[None],
        clip.image_embeds[None],
        sigma,
        noise,
    )


def check_cache(config: LoraTrainConfig, cache: LatentCache) -> None:
    """Every clip must hold one section after its start frame (UserError naming the shortest)."""
    shortest = min(cache.entries, key=lambda e: e.latents)
    if shortest.latents - 1 < config.window:
        raise UserError(
            f"clip {shortest.source} has {shortest.latents - 1} latents after its start frame, fewer than "
            f"window={config.window}; cache longer clips (--clip-latents) or drop it"
        )
