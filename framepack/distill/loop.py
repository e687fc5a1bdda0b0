"""`distill`: a teacher bundle -> a student bundle that samples a section in N <= 4 steps.

The run is a training run (framepack.train.loop.train: the same run directory, checkpoints,
exact resume, progress, EMA and bundle export) whose student starts as the teacher and whose
samples are labelled by the teacher (framepack.distill.labels). Run directory, as `framepack
train`'s; `bundle/` is the student: its framepack.json sets `steps` N, `sampler` "euler",
`cfg_scale` 1 and the grid's `shift`, and carries the teacher's default prompt and example
image, so `framepack generate --model RUN/bundle` uses it like any model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from framepack.distill.config import DistillConfig
from framepack.distill.labels import Labeller
from framepack.model_bundle import load_bundle, load_meta, update_meta
from framepack.train.components import Denoiser
from framepack.train.distributed import Distributed
from framepack.train.loop import train


def load_teacher(config: DistillConfig) -> Denoiser:
    """The teacher bundle as a frozen Denoiser (UserError when it is missing or damaged)."""
    bundle = load_bundle(config.teacher)
    return Denoiser(bundle.transformer, bundle.text_encoder, config.prediction)


def distill(
    config: DistillConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True
) -> Path:
    """Distil `config.teacher` into a few-step student in `run_dir` (or resume that run); returns
    the run directory, whose `bundle/` is the student. See the module docstring."""
    labeller = Labeller(config, load_teacher(config))
    run = train(config, run_dir, resume=resume, init=config.teacher, progress=progress, label=labeller)
    env = Distributed.from_env()
    if env.is_main:
        finish_student(config, run / "bundle")
    env.barrier()
    return run


def finish_student(config: DistillConfig, bundle: Path) -> None:
    """Give the student bundle its teacher's default prompt and example image, and a model card
    saying what it was distilled from and how."""
    teacher = Path(config.teacher)
    meta = load_meta(teacher)
    name = str(meta.model_card.get("name", teacher.name))
    card = {
        "name": f"{name}-{config.student_steps}step",
        "distilled_from": str(teacher),
        "method": "guidance-folded flow-map distillation on the student's grid (docs/distill.md)",
        "student_steps": config.student_steps,
        "teacher_steps": config.teacher_steps,
        "teacher_cfg": config.teacher_cfg,
        "self_rollout": config.self_rollout,
    }
    if (teacher / "example.png").is_file():
        shutil.copyfile(teacher / "example.png", bundle / "example.png")
    update_meta(bundle, default_prompt=meta.default_prompt, model_card=card)
