"""Few-step students of the released 13B models: a LoRA on the frozen transformer.

The released checkpoints are guidance-distilled already (distilled guidance 10 is an input, real
CFG is off), so the student folds nothing more in: it learns to sample a section in N <= 4
Euler steps on the released, resolution-dependent grid (`get_sigmas(N, seq_len=...)`, shift 7
at the 640 buckets), the target being the released model's own UniPC solution over each
interval. The teacher is the same transformer with its adapters switched off, so the run holds
one copy of the 13B weights. Everything else is `framepack lora train`'s (framepack.lora_train:
the latent cache, the released index layouts, checkpoints, exact resume, DDP/FSDP2, block
streaming); only the sections' targets change (`LoraLabeller`, the loop's `label` hook).

The student is `RUN/lora.safetensors`: `framepack generate --model hunyuan-inverted --lora
RUN/lora.safetensors --steps N --sampler euler`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from framepack.distill.config import check_steps
from framepack.distill.labels import distill_generator
from framepack.distill.targets import distill_pair, student_grid, teacher_interval
from framepack.errors import UserError
from framepack.lora_train.adapters import lora_layers
from framepack.lora_train.config import LoraTrainConfig
from framepack.lora_train.loop import Sources, base_dtype, locate_transformer, train_lora
from framepack.lora_train.samples import LoraSample
from framepack.sampling import calculate_mu
from framepack.train.distributed import Distributed
from framepack.train.loss import noisy_latents


@dataclass(frozen=True)
class LoraDistillConfig(LoraTrainConfig):
    """A LoRA run (framepack.lora_train.config) whose sections are labelled by the frozen base
    model's few-step targets. student_steps N (1..4); teacher_steps: the base model's steps over
    the whole grid (a multiple of N); teacher_sampler: its solver on each interval."""

    student_steps: int = 4
    teacher_steps: int = 24
    teacher_sampler: str = "unipc"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self.student_steps, self.teacher_steps, self.teacher_sampler)

    def file_meta(self) -> dict[str, str]:
        return {**super().file_meta(), "framepack_student_steps": str(self.student_steps),
                "framepack_sampler": "euler"}  # fmt: skip


def released_shift(window: int, latent_hw: tuple[int, int]) -> float:
    """The shift `framepack generate` uses for a released model's section of this size."""
    h, w = latent_hw
    return math.exp(calculate_mu(window * h * w // 4))


@contextlib.contextmanager
def adapters_off(model: nn.Module) -> Iterator[None]:
    """The base model: every LoRA adapter switched off for the block (weights untouched)."""
    layers = list(lora_layers(model).values())
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


class LoraLabeller:
    """Few-step targets of the base model for a LoRA run's sections (the `label` hook of
    framepack.lora_train.loop.train_lora)."""

    def __init__(self, config: LoraDistillConfig) -> None:
        self.config = config
        self.env = Distributed.from_env()

    def __call__(self, model: nn.Module, samples: list[LoraSample], step: int) -> list[LoraSample]:
        mine = range(self.env.rank, self.config.batch_size, self.env.world)
        return [
            self.label(model, s, distill_generator(self.config.seed, step, i, 0))
            for s, i in zip(samples, mine)
        ]

    def label(self, model: nn.Module, sample: LoraSample, gen: torch.Generator) -> LoraSample:
        config, device = self.config, self.env.device
        n = config.student_steps
        interval = int(torch.randint(n, (), generator=gen))
        shift = released_shift(config.window, tuple(sample.target.shape[-2:]))
        grid = student_grid(n, shift)
        sigma = float(grid[interval])
        s = sample.to(device)
        x = noisy_latents(s.target, s.noise, torch.full((1,), sigma, device=device))
        mask = torch.ones(s.text_states.shape[:2], dtype=torch.bool, device=device)
        guidance = torch.full((1,), config.guidance * 1000.0, device=device)
        bf16 = base_dtype(config, self.env) == torch.bfloat16
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

        def velocity(xt: torch.Tensor, t: float) -> torch.Tensor:
            out = model(xt, torch.full((1,), t * 1000.0, device=device), s.text_states, mask, s.pooled,
                        s.target_indices, context=s.context, image_embeds=s.image_embeds, guidance=guidance)  # fmt: skip
            return out.float()

        with torch.no_grad(), adapters_off(model), autocast:
            inner = teacher_interval(n, config.teacher_steps // n, shift, interval)
            x0, noise = distill_pair(velocity, x, grid, interval, inner, config.teacher_sampler)
        return dataclasses.replace(sample, target=x0.cpu(), noise=noise.cpu(), sigma=torch.full((1,), sigma))


def distill_lora(
    config: LoraDistillConfig,
    run_dir: str | Path,
    sources: Sources,
    *,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Distil a released model into a few-step LoRA student in `run_dir`; returns the run."""
    return train_lora(config, run_dir, sources, resume=resume, progress=progress, label=LoraLabeller(config))


def distill_lora_cli(args: argparse.Namespace, changes: dict[str, Any]) -> int:
    """`framepack distill --model hunyuan-*`: the run's config (saved, --config, flags), then train."""
    if args.teacher is not None:
        raise UserError("--teacher names a bundle; a released model is distilled with --model alone")
    if changes.pop("teacher_cfg", 1.0) != 1.0:
        raise UserError(
            "--cfg: the released models are guidance-distilled (guidance 10) and the latent cache "
            "holds no negative-prompt states; drop --cfg"
        )
    if changes.pop("self_rollout", 0.0):
        raise UserError("--self-rollout is for bundle teachers (--teacher) for now; drop it with --model")
    changes.pop("micro_batch", None)  # a LoRA step is one section per forward
    saved_path = Path(args.out) / "config.json"
    saved = json.loads(saved_path.read_text()) if args.resume and saved_path.is_file() else {}
    raw = {**saved.get("config", {}), **changes, "model": args.model}
    if args.rank is not None:
        raw["rank"] = args.rank
    try:
        config = LoraDistillConfig.from_dict(raw)
    except (TypeError, ValueError) as err:
        raise UserError(str(err)) from None
    cache = args.cache or saved.get("cache")
    if cache is None:
        raise UserError("--cache is required with --model (the folder written by `framepack lora cache`)")
    transformer = args.transformer_dir or (None if args.model_dir else saved.get("transformer"))
    transformer = locate_transformer(config.model, args.model_dir, transformer)
    run = distill_lora(config, args.out, Sources(str(cache), transformer), resume=args.resume,
                       progress=not args.no_progress)  # fmt: skip
    print(
        f"student LoRA written to {run / 'lora.safetensors'}: framepack generate --model {config.model} "
        f"--lora {run / 'lora.safetensors'} --steps {config.student_steps} --sampler euler"
    )
    Distributed.from_env().leave()
    return 0
