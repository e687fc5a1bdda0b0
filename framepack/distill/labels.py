"""A distillation step's samples: the teacher's few-step targets, some on self-rollout history.

The training loop (framepack.train.loop.train) draws each step's micro-batches as it always
does (clips, layouts, sections, noise: keyed by (seed, step, micro-batch)); `Labeller` then

1. draws, from a generator keyed by (seed, step, micro-batch, group), the interval i of the
   student's grid this micro-batch trains and, with probability `self_rollout` per sample,
   replaces the sample by a self-rollout one (framepack.distill.rollout);
2. places each section at the interval's start, `x = (1 - s_i) x0 + s_i noise` (the true
   section noised to s_i, as PeRFlow does), and asks the teacher where its guided ODE carries
   x at s_{i+1} (framepack.distill.targets);
3. returns micro-batches whose flow-matching pair (x0, noise) at s_i trains the student's
   velocity toward that straight line, so `train_step` and the loss are the training ones.

Everything drawn is keyed as above and the rollouts use the student's restored weights, so a
resumed run repeats the losses of an uninterrupted one bit for bit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from framepack.components import spec_from_meta
from framepack.context import plan_context
from framepack.distill.config import DistillConfig
from framepack.distill.rollout import Rollout, forward_plan, generate_forward
from framepack.distill.targets import distill_pair, student_grid, teacher_interval
from framepack.packing import PackedContext, PackedLevel
from framepack.sampling import Velocity, batched_cfg_velocity
from framepack.train.components import Denoiser, schedule_of
from framepack.train.data import MicroBatch, sample_window, section_caption
from framepack.train.loop import Session, bundle_meta
from framepack.train.loss import noisy_latents


def distill_generator(seed: int, step: int, micro_index: int, group: int) -> torch.Generator:
    """The generator of a micro-batch group's distillation draws (apart from the data's own)."""
    state = np.random.SeedSequence([seed, step, micro_index, group, 0xD157]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def repeat_context(context: PackedContext, times: int) -> PackedContext:
    """The context with its batch repeated `times` (conditional rows first, as batched CFG)."""
    return PackedContext(
        tuple(PackedLevel(lv.kernel, lv.latents.repeat(times, *[1] * (lv.latents.dim() - 1)),
                          lv.indices.repeat(times, 1)) for lv in context.levels)
    )  # fmt: skip


def select(mb: MicroBatch, rows: list[int]) -> MicroBatch:
    """The micro-batch of samples `rows` only."""
    context = PackedContext(
        tuple(PackedLevel(lv.kernel, lv.latents[rows], lv.indices[rows]) for lv in mb.context.levels)
    )
    return dataclasses.replace(
        mb, target=mb.target[rows], target_indices=mb.target_indices[rows], context=context,
        captions=[mb.captions[r] for r in rows], sigma=mb.sigma[rows], noise=mb.noise[rows],
        layouts=[mb.layouts[r] for r in rows],
    )  # fmt: skip


class Labeller:
    """Teacher targets (and self-rollout history) for a distillation run's micro-batches; the
    `label` hook of framepack.train.loop.train. `rollouts` holds the last step's rollouts."""

    def __init__(self, config: DistillConfig, teacher: Denoiser) -> None:
        self.config = config
        self.teacher = teacher.eval().requires_grad_(False)
        n = config.student_steps
        self.grid = student_grid(n, config.grid_shift)  # (n + 1,)
        self.inner = [teacher_interval(n, config.inner_steps, config.grid_shift, i) for i in range(n)]
        self.schedule = schedule_of(config)
        self.anchor_gap = spec_from_meta(bundle_meta(config), Path(".")).max_anchor_gap
        self.rollouts: list[Rollout] = []

    def __call__(self, run: Session, batches: list[MicroBatch], step: int) -> list[MicroBatch]:
        self.teacher.to(run.env.device)
        self.rollouts = []
        out = []
        for group, mb in enumerate(batches):
            gen = distill_generator(self.config.seed, step, mb.micro_index, group)
            interval = int(torch.randint(self.config.student_steps, (), generator=gen))
            for part in self.with_rollouts(run, mb, gen):
                out.append(self.label(part, interval, run.env.device))
        return out

    # -- self-rollout -----------------------------------------------------------------------------

    def with_rollouts(self, run: Session, mb: MicroBatch, gen: torch.Generator) -> list[MicroBatch]:
        """`mb` with each sample replaced, with probability `self_rollout`, by a self-rollout
        sample (each its own micro-batch: its context may be shaped differently)."""
        if self.config.self_rollout == 0:
            return [mb]
        chosen = [bool(torch.rand((), generator=gen) < self.config.self_rollout) for _ in mb.captions]
        keep = [i for i, c in enumerate(chosen) if not c]
        parts = [select(mb, keep)] if keep else []
        for _ in range(sum(chosen)):
            sample, rollout = self.rollout_sample(run, gen, mb.micro_index)
            parts.append(sample)
            self.rollouts.append(rollout)
        return parts

    def rollout_sample(
        self, run: Session, gen: torch.Generator, micro_index: int
    ) -> tuple[MicroBatch, Rollout]:
        """A forward section of a clip whose history the student generates first: k >= 1
        sections from the true start frame and the section's caption, with the seed drawn here."""
        config, window = self.config, self.config.window
        clip = int(torch.randint(len(run.source), (), generator=gen))
        k = int(torch.randint(1, (config.data.clip_latents - window) // window + 1, (), generator=gen))
        latents, _, captions = sample_window(run.source, run.codec, clip, config.data.clip_latents, gen,
                                             follow_start=True, needed=(k + 1) * window)  # fmt: skip
        caption = section_caption(captions, 1 + k * window, window, run.codec, config.data.fps)
        if float(torch.rand((), generator=gen)) < config.caption_dropout:
            caption = ""
        seed = int(torch.randint(0, 2**62, (), generator=gen))
        was_training = run.model.training
        run.model.eval()
        try:
            timeline = generate_forward(
                run.model, latents[None], caption, k, self.schedule, self.grid, seed, window=window,
                prediction=config.prediction, anchor_gap=self.anchor_gap, quantize=run.codebook,
            )  # fmt: skip
        finally:
            run.model.train(was_training)
        section = forward_plan(k + 1, window).sections[k]
        context = plan_context(timeline, section, self.schedule, "forward", anchor_gap=self.anchor_gap,
                               quantize=run.codebook)  # fmt: skip
        target = latents[None, :, section.start : section.stop]  # (1, C, w, h, w): the true section
        sample = MicroBatch(
            target=target, target_indices=torch.tensor([section.latent_indices]), context=context,
            captions=[caption], sigma=torch.zeros(1), noise=torch.randn(target.shape, generator=gen),
            layouts=["forward"], micro_index=micro_index,
        )  # fmt: skip
        return sample, Rollout(clip, seed, caption, k, timeline)

    # -- teacher targets --------------------------------------------------------------------------

    def teacher_velocity(self, mb: MicroBatch, device: torch.device) -> Velocity:
        """The teacher's guided velocity over the micro-batch: `u + cfg (c - u)` against the
        empty prompt (what the caption-dropout samples trained), one batched call per step."""
        cfg, m = self.config.teacher_cfg, len(mb.captions)
        guided = cfg != 1.0
        prompts = mb.captions + [""] * m if guided else mb.captions
        ids, mask = self.teacher.text_encoder.tokenize_batch(prompts)
        ids, mask = ids.to(device), mask.to(device)
        context = (repeat_context(mb.context, 2) if guided else mb.context).to(device)
        indices = mb.target_indices.repeat(2 if guided else 1, 1).to(device)

        def both(x: Tensor, sigma: float) -> Tensor:
            s = torch.full((x.shape[0],), sigma, device=device)
            return self.teacher(x, s, ids, mask, indices, context).float()

        return batched_cfg_velocity(both, cfg)

    def label(self, mb: MicroBatch, interval: int, device: torch.device) -> MicroBatch:
        """`mb` placed at the interval's start, its flow-matching pair the teacher's target."""
        sigma = float(self.grid[interval])
        sigmas = torch.full((len(mb.captions),), sigma)
        x = noisy_latents(mb.target, mb.noise, sigmas).to(device)  # (m, C, w, h, w) at s_i
        with torch.no_grad():
            x0, noise = distill_pair(
                self.teacher_velocity(mb, device), x, self.grid, interval, self.inner[interval],
                self.config.teacher_sampler,
            )  # fmt: skip
        return dataclasses.replace(mb, target=x0.cpu(), noise=noise.cpu(), sigma=sigmas)
