"""The distillation configuration: the teacher's training config plus what distillation adds.

`DistillConfig` is a `TrainConfig` (framepack.train.config), so the training loop, its
checkpoints, exact resume, EMA, ledger and export serve a distillation run unchanged: the data,
window, schedule, layouts and codec are the teacher's own (read from its bundle's
`framepack.json`); the optimisation fields (steps, lr, batch, EMA) are the student's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framepack.errors import UserError
from framepack.model_bundle import load_meta
from framepack.options import SAMPLERS
from framepack.train.config import TrainConfig

MAX_STUDENT_STEPS = 4

# Optimisation defaults of a distillation run (the teacher's recipe trains from scratch: its lr,
# warm-up and run length do not suit a student that starts as the teacher).
STUDENT_DEFAULTS: dict[str, Any] = {
    "lr": 2e-4,
    "warmup_steps": 20,
    "cooldown_steps": 0,
    "steps": 500,
    "ema_halflife_samples": 500.0,
    "checkpoint_every": 50,
    "log_every": 10,
}


def check_steps(student_steps: int, teacher_steps: int, teacher_sampler: str) -> None:
    """ValueError unless 1 <= N <= 4, the teacher's steps a multiple of N and its sampler known."""
    n, k = student_steps, teacher_steps
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_STUDENT_STEPS:
        raise ValueError(f"student_steps must be an integer from 1 to {MAX_STUDENT_STEPS}, got {n!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < n or k % n:
        raise ValueError(f"teacher_steps must be a multiple of student_steps ({n}), got {k!r}")
    if teacher_sampler not in SAMPLERS:
        raise ValueError(f"teacher_sampler must be one of {SAMPLERS}, got {teacher_sampler!r}")


@dataclass(frozen=True)
class DistillConfig(TrainConfig):
    """A few-step student of a teacher bundle (docs/distill.md).

    teacher:         the teacher model bundle (a folder with framepack.json).
    student_steps:   N, the student's sampling steps per section (1..4): Euler on the grid
                     `get_sigmas(N, shift=grid_shift)`, one model call each, no CFG pass.
    teacher_steps:   the teacher's steps over the whole grid (a multiple of N): each of the
                     student's intervals is solved with teacher_steps / N teacher steps.
    teacher_cfg:     the classifier-free guidance folded into the student (the teacher's
                     velocity is `u + cfg * (c - u)` against the empty prompt; 1 = none).
    teacher_sampler: the teacher's solver on each interval ("unipc" or "euler").
    grid_shift:      the time shift of the student's grid (the teacher's sampling shift).
    self_rollout:    P, the share of samples whose packed history is built from sections the
                     student generated itself from the true start frame (0 = true history).
    """

    teacher: str = ""
    student_steps: int = 4
    teacher_steps: int = 24
    teacher_cfg: float = 1.0
    teacher_sampler: str = "unipc"
    grid_shift: float = 1.0
    self_rollout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self.student_steps, self.teacher_steps, self.teacher_sampler)
        if not (math.isfinite(self.teacher_cfg) and self.teacher_cfg >= 1):
            raise ValueError(f"teacher_cfg must be a number >= 1 (1 = no guidance), got {self.teacher_cfg}")
        if not (math.isfinite(self.grid_shift) and self.grid_shift > 0):
            raise ValueError(f"grid_shift must be > 0, got {self.grid_shift}")
        if not 0 <= self.self_rollout <= 1:
            raise ValueError(f"self_rollout must be in [0, 1], got {self.self_rollout}")
        if self.self_rollout > 0:
            if "forward" not in self.layouts:
                raise ValueError(
                    "self_rollout builds forward-plan history, but the teacher was trained for "
                    f"{'/'.join(self.layouts)} sections only; use self_rollout 0"
                )
            if self.data.clip_latents < 2 * self.window:
                raise ValueError(
                    f"self_rollout needs room for one generated section before the trained one: "
                    f"data.clip_latents ({self.data.clip_latents}) must be at least 2 * window ({2 * self.window})"
                )

    @property
    def inner_steps(self) -> int:
        """Teacher steps per student interval."""
        return self.teacher_steps // self.student_steps

    def sampling_defaults(self) -> dict[str, Any]:
        """The student's bundle samples in N Euler steps on its grid, without CFG."""
        return {
            "steps": self.student_steps,
            "sampler": "euler",
            "cfg_scale": 1.0,
            "shift": self.grid_shift,
        }


def teacher_config(teacher: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The teacher's training config (from its bundle) and its sampling defaults (steps, cfg,
    sampler, shift, default prompt). UserError when the folder is no bundle or lacks the config."""
    meta = load_meta(teacher)  # UserError: not a bundle
    raw = meta.training.get("config")
    if not isinstance(raw, dict):
        raise UserError(
            f"--teacher {teacher}: its framepack.json records no training config; distil a bundle "
            "written by framepack train"
        )
    if "student_steps" in raw:
        raise UserError(f"--teacher {teacher} is itself a distilled student; distil its teacher instead")
    try:
        config = TrainConfig.from_dict(raw)
    except (TypeError, ValueError) as err:
        raise UserError(f"--teacher {teacher}: its training config does not read ({err})") from None
    defaults = {
        "steps": meta.steps,
        "cfg": float(meta.cfg_scale),
        "sampler": meta.sampler,
        "shift": float(meta.shift),
        "default_prompt": meta.default_prompt,
    }
    return config, defaults


def make_config(teacher: str | Path, **changes: Any) -> DistillConfig:
    """A distillation config for `teacher`: its training settings, the student's optimisation
    defaults (`STUDENT_DEFAULTS`), its sampling defaults (teacher steps rounded up to a multiple
    of N, its CFG scale, sampler and shift), then `changes` (DistillConfig fields; None = keep).
    UserError (one line) when a value is out of range."""
    base, sampling = teacher_config(teacher)
    n = changes.get("student_steps") or 4
    k = changes.get("teacher_steps") or n * max(1, math.ceil(sampling["steps"] / n))
    fields = {
        **base.to_dict(),
        **STUDENT_DEFAULTS,
        "teacher": str(teacher),
        "student_steps": n,
        "teacher_steps": k,
        "teacher_cfg": sampling["cfg"],
        "teacher_sampler": sampling["sampler"],
        "grid_shift": sampling["shift"],
    }
    fields.update({key: value for key, value in changes.items() if value is not None})
    try:
        return DistillConfig.from_dict(json.loads(json.dumps(fields)))
    except (TypeError, ValueError) as err:
        raise UserError(str(err)) from None
