"""`framepack train`: train or finetune a packed next-section model.

    framepack train --preset demo --out RUN_DIR            # from scratch
    framepack train --out RUN_DIR --resume [--steps N]     # continue (bit-exact loss sequence)
    framepack train --config my.json --out RUN_DIR --init BUNDLE_OR_RUN [--add-level 8,16,16]
    framepack train --out RUN_DIR --export BUNDLE_DIR      # EMA of the latest checkpoint -> bundle
    framepack train --preset demo --out RUN_DIR --discretize-history 128   # SPEC sec. 4

Several processes: `torchrun --nproc_per_node N -m framepack train ...` (DDP, or FSDP with
`"strategy": "fsdp"` in the config).

LoRAs for the released 13B models are trained by `framepack lora` (docs/lora.md); `--model` and
`--lora-rank` here only say so, in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path

from framepack.errors import UserError


def _kernel(text: str) -> tuple[int, int, int]:
    parts = text.replace("x", ",").split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"a kernel is three positive integers 't,h,w', got {text!r}")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


LORA_POINTER = (
    "framepack train trains the small packed model (--preset/--config); LoRAs for the released "
    "models are `framepack lora cache --data CLIPS --cache CACHE` then `framepack lora train --cache "
    "CACHE --out RUN --model hunyuan-inverted|hunyuan-f1 --rank R` (docs/lora.md)"
)


class _PointToLora(argparse.Action):
    """`--model` / `--lora-rank`: refused while parsing (before the flags that belong to
    `framepack lora` are reported unknown), with the command that does it."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string} {values}: {LORA_POINTER}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action=_PointToLora, help=f"not here: {LORA_POINTER}")
    parser.add_argument("--lora-rank", action=_PointToLora, metavar="R", help="not here: see --model")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", help="a named training config (demo, tiny-test)")
    source.add_argument("--config", type=Path, help="a JSON training config (TrainConfig fields)")
    parser.add_argument("--out", type=Path, required=True, help="the run directory")
    parser.add_argument("--steps", type=int, help="override the number of optimizer steps")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    parser.add_argument("--threads", type=int, help="CPU threads per process (default: the config's)")
    parser.add_argument("--init", type=Path, help="finetune from a model bundle or a run directory")
    parser.add_argument(
        "--add-level", type=_kernel, action="append", default=[], metavar="T,H,W",
        help="add a context level with this kernel, initialised from the existing projections (with --init)",
    )  # fmt: skip
    parser.add_argument(
        "--discretize-history", type=int, metavar="K",
        help="discretize history latents to a K-means codebook of K entries (128 as the paper's text, "
        "256 as its table), fitted on training latents before step 0 and saved in the bundle",
    )  # fmt: skip
    parser.add_argument(
        "--export", type=Path, metavar="DIR", help="write the latest EMA weights as a bundle and exit"
    )
    parser.add_argument(
        "--export-dtype",
        choices=["float32", "float16"],
        default="float32",
        help="transformer precision of --export",
    )
    parser.add_argument("--overwrite", action="store_true", help="let --export replace an existing bundle")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _resolve_config(args: argparse.Namespace):
    from framepack.runtime import check_threads
    from framepack.train.config import load_config, preset

    saved = args.out / "config.json"
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; give a run directory (it is created if missing)")
    if args.resume and not saved.is_file():
        raise UserError(f"nothing to resume in {args.out} (no config.json); start the run without --resume")
    if args.resume:
        if args.preset or args.config:
            raise UserError("--resume reads the run's own config.json; drop --preset/--config")
        config = load_config(saved)
    elif args.config is not None:
        config = load_config(args.config)
    elif args.preset is None:
        raise UserError("say what to train: --preset demo (the bundled model's recipe) or --config FILE")
    else:
        config = preset(args.preset)
    if args.steps is not None:
        if args.steps < 1:
            raise UserError(f"--steps must be >= 1, got {args.steps}")
        cooldown = config.cooldown_steps
        if cooldown > args.steps:  # a short try of a long recipe: keep its cooldown's share
            cooldown = round(args.steps * cooldown / config.steps)
            print(f"cooldown shortened to {cooldown} of {args.steps} steps (the recipe's share)")
        config = config.replace(steps=args.steps, cooldown_steps=cooldown)
    if args.threads is not None:
        config = config.replace(threads=check_threads(args.threads))
    k = getattr(args, "discretize_history", None)
    if k is not None:
        if k < 2:
            raise UserError(
                f"--discretize-history is the codebook size K, at least 2 (128 as the paper), got {k}"
            )
        if args.resume and k != config.discretize_history:
            raise UserError(
                f"--discretize-history {k}: the run in {args.out} was started with "
                f"{config.discretize_history or 'none'}; a resume keeps it (drop the flag)"
            )
        config = config.replace(discretize_history=k)
    return config


def run(args: argparse.Namespace) -> int:
    from framepack.resume import StopFlag
    from framepack.train.checkpoint import latest_checkpoint
    from framepack.train.loop import export_bundle, train

    if args.export is not None:
        import torch

        if args.export.exists() and not args.export.is_dir():
            raise UserError(f"--export {args.export} is a file; give a folder name for the bundle")
        if args.export.exists() and not args.overwrite:
            raise UserError(f"--export {args.export} already exists; pass --overwrite to replace it")

        out = export_bundle(args.out, args.export, dtype=getattr(torch, args.export_dtype))
        print(f"bundle written to {out}")
        return 0
    if args.add_level and args.init is None:
        raise UserError("--add-level needs --init (the model whose projections initialise the new level)")
    if args.resume and args.init is not None:
        raise UserError("--init starts a new run; drop it with --resume")
    config = _resolve_config(args)
    rank0 = os.environ.get("RANK", "0") == "0"
    one_process = os.environ.get("WORLD_SIZE", "1") == "1"
    # Ctrl-C and SIGTERM: stop after the current step with a checkpoint (one process only)
    with StopFlag(on_signal=None) if one_process else contextlib.nullcontext() as stop:
        run_dir = train(
            config,
            args.out,
            resume=args.resume,
            init=args.init,
            add_levels=args.add_level,
            progress=not args.no_progress,
            stop=stop,
        )
    if stop:
        latest = latest_checkpoint(run_dir / "checkpoints")
        step = int(latest.stem.split("-")[1]) if latest else 0
        name = signal.Signals(stop.signum).name if stop.signum else "a stop request"
        print(
            f"framepack train: stopped by {name} after step {step} (checkpoint saved); continue with "
            f"framepack train --out {args.out} --resume",
            file=sys.stderr,
        )
        return 130
    if rank0:  # one line, not one per process under torchrun
        print(f"run finished: {run_dir} (bundle: {run_dir / 'bundle'})")
    from framepack.train.distributed import Distributed

    Distributed.from_env().leave()
    return 0
