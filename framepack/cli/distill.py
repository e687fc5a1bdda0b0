"""`framepack distill`: a few-step student of a model (docs/distill.md).

    framepack distill --teacher demo --out RUN [--student-steps 4] [--self-rollout 0.5]
    framepack distill --out RUN --resume [--steps N]          # continue (bit-exact losses)
    framepack distill --model hunyuan-inverted --cache CACHE --out RUN [--rank 32]   # 13B: LoRA

A bundle teacher gives a student bundle (RUN/bundle: `framepack generate --model RUN/bundle`);
a released model gives a LoRA (RUN/lora.safetensors: `framepack generate --model
hunyuan-inverted --lora RUN/lora.safetensors --steps N --sampler euler`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from framepack.errors import UserError

# flags that set DistillConfig fields (None = the teacher's / the default)
FIELDS: dict[str, tuple[type, str]] = {
    "student_steps": (int, "sampling steps of the student, 1 to 4 (default 4)"),
    "teacher_steps": (
        int,
        "teacher steps over the whole grid, a multiple of N (default: its own, rounded up)",
    ),
    "cfg": (float, "guidance folded into the student (default: the teacher's cfg_scale)"),
    "self_rollout": (float, "share of samples trained on history the student generated (default 0)"),
    "steps": (int, "optimizer steps (default 500)"),
    "lr": (float, "learning rate (default 2e-4)"),
    "batch_size": (int, "samples per step (default: the teacher's)"),
    "micro_batch": (int, "samples per forward (default: the teacher's)"),
    "seed": (int, "seed of every sample drawn (default: the teacher's)"),
    "threads": (int, "CPU threads (default: the teacher's)"),
}
RENAMED = {"cfg": "teacher_cfg"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", help="the teacher: a model bundle folder, or 'demo'")
    parser.add_argument("--out", type=Path, required=True, help="the run directory")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--config", type=Path, help="a JSON file of DistillConfig fields (flags override it)")
    for name, (kind, help_text) in FIELDS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, help=help_text)
    released = parser.add_argument_group("the released 13B models: a LoRA student (framepack lora)")
    released.add_argument(
        "--model", choices=("hunyuan-inverted", "hunyuan-f1"), help="distil a released model"
    )
    released.add_argument("--cache", help="its latent cache (framepack lora cache)")
    released.add_argument("--model-dir", help="folder holding the released transformer (or an HF cache)")
    released.add_argument("--transformer-dir", help="the released transformer folder itself")
    released.add_argument("--rank", type=int, help="LoRA rank (default 32)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    """DistillConfig fields from --config, then the flags given."""
    changes: dict[str, Any] = {}
    if args.config is not None:
        try:
            raw = json.loads(args.config.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"--config {args.config}: {err}") from None
        if not isinstance(raw, dict):
            raise UserError(f"--config {args.config} must hold a JSON object of DistillConfig fields")
        changes.update(raw)
    for name in FIELDS:
        value = getattr(args, name)
        if value is not None:
            changes[RENAMED.get(name, name)] = value
    return changes


def _bundle_config(args: argparse.Namespace):
    from framepack.distill.config import DistillConfig, make_config
    from framepack.model_bundle import demo_path

    saved = args.out / "config.json"
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; give a run directory (it is created if missing)")
    if args.resume:
        if not saved.is_file():
            raise UserError(
                f"nothing to resume in {args.out} (no config.json); start the run without --resume"
            )
        changes = _changes(args)
        extra = sorted(set(changes) - {"steps", "threads"})
        if args.teacher or extra:
            raise UserError(
                "--resume continues the run's own config.json; only --steps and --threads may change"
            )
        try:
            return DistillConfig.from_dict({**json.loads(saved.read_text()), **changes})
        except (TypeError, ValueError) as err:
            raise UserError(f"{saved}: {err}") from None
    if args.teacher is None:
        raise UserError(
            "say what to distil: --teacher BUNDLE (or demo), or --model hunyuan-inverted|hunyuan-f1"
        )
    teacher = demo_path() if args.teacher == "demo" else Path(args.teacher)
    return make_config(teacher, **_changes(args))


def run(args: argparse.Namespace) -> int:
    if args.model is not None:
        return run_lora(args)
    for flag in ("cache", "model_dir", "transformer_dir", "rank"):
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag.replace('_', '-')} applies to the released models (--model); drop it")
    from framepack.distill.loop import distill

    config = _bundle_config(args)
    from framepack.train.distributed import Distributed

    run_dir = distill(config, args.out, resume=args.resume, progress=not args.no_progress)
    env = Distributed.from_env()
    if env.is_main:  # one line, not one per process under torchrun
        print(f"student written to {run_dir / 'bundle'} ({config.student_steps} steps, no CFG pass)")
    env.leave()
    return 0


def run_lora(args: argparse.Namespace) -> int:
    from framepack.distill.lora import distill_lora_cli

    return distill_lora_cli(args, _changes(args))
