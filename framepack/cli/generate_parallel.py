"""`framepack generate --parallel N`: one job on N processes under torchrun, sequence-parallel.

Not a subcommand: `framepack.cli.generate.run` hands over here when `--parallel` is above 1.

    torchrun --nproc_per_node 4 -m framepack generate --model hunyuan-inverted --model-dir ~/models \
        --image start.png --prompt "..." --parallel 4

Every process loads the model (on cuda:LOCAL_RANK with NCCL, or on the CPU with gloo), wraps the
transformer in `framepack.models.parallel.SequenceParallel` and runs the same job (same seed,
same plan), so the processes stay in step and each computes 1/N of every attention. Process 0
writes the video and shows the progress; the others write theirs into a temporary folder that is
removed at the end (the pipeline has no "compute but do not write" role). With `--resume` the
others start from a copy of process 0's saved sections, so the output must be on a file system
every process sees (one machine, or a shared disk).
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from framepack.errors import UserError

if TYPE_CHECKING:
    from framepack.options import GenerationOptions, LoadOptions
    from framepack.pipeline import GenerationResult

RELEASED = ("hunyuan-inverted", "hunyuan-f1")


@dataclass(frozen=True)
class Launch:
    """This process's place in torchrun's group."""

    rank: int
    world: int
    local_rank: int


def check_launch(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Launch:
    """Refuse a launch `--parallel` cannot serve (UserError, one line), before anything loads."""
    n = args.parallel
    if n < 1:
        raise UserError(f"--parallel must be >= 1, got {n}")
    if args.model not in RELEASED:
        raise UserError(
            f"--parallel applies to the released models (hunyuan-inverted, hunyuan-f1), not to {args.model}; "
            "drop --parallel"
        )
    world = environ.get("WORLD_SIZE")
    if world is None or "RANK" not in environ:
        raise UserError(
            f"--parallel {n} runs under torchrun: torchrun --nproc_per_node {n} -m framepack generate ... "
            f"--parallel {n}"
        )
    if int(world) != n:
        raise UserError(
            f"--parallel {n} but torchrun started {world} processes (WORLD_SIZE={world}); "
            f"give --nproc_per_node {n} or --parallel {world}"
        )
    if args.teacache > 0:
        raise UserError(
            "--teacache with --parallel is not supported (each process would decide its skips from its "
            "own tokens); drop one"
        )
    if args.device not in ("auto", "cuda", "cpu"):
        raise UserError(
            f"--parallel puts process r on cuda:LOCAL_RANK; give --device auto, cuda or cpu, not {args.device}"
        )
    try:
        import yunchang  # noqa: F401
    except ImportError:
        raise UserError("--parallel needs yunchang: pip install 'framepack[parallel]'") from None
    heads = _heads(args.model, args.model_dir)
    if heads % n:
        choices = ", ".join(str(d) for d in range(2, heads + 1) if heads % d == 0)
        raise UserError(f"--parallel {n} must divide the model's {heads} attention heads ({choices})")
    return Launch(int(environ["RANK"]), n, int(environ.get("LOCAL_RANK", "0")))


def _heads(model: str, model_dir: str | None) -> int:
    """The transformer's head count from its config.json (24, the released one, when not found:
    loading then names what is missing)."""
    from framepack.hunyuan.paths import TRANSFORMERS_BY_MODEL, _default_cache_roots, find

    roots = [Path(model_dir)] if model_dir is not None else _default_cache_roots()
    try:
        folder = find(TRANSFORMERS_BY_MODEL[model], roots)
        return int(json.loads((folder / "config.json").read_text()).get("num_attention_heads", 24))
    except (UserError, OSError, ValueError):
        return 24


def join_group(device: str, local_rank: int):
    """Join torchrun's process group: NCCL on cuda:LOCAL_RANK, gloo on the CPU. Returns the device."""
    import torch
    import torch.distributed as dist

    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise UserError("--device cuda: CUDA is not available here; use --device cpu")
    target = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        atexit.register(_leave)  # a gloo group left open can abort the process at exit
    return target


def _leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def follower_options(options, scratch: Path):
    """Options for a process other than 0: the same job, written into `scratch`.

    With `--resume`, process 0's saved files (video, sidecar, resume state, sections) are copied
    first, so every process resumes at the same section.
    """
    from framepack.resume import parts_path, resume_path
    from framepack.video import sidecar_path

    out = scratch / Path(options.out or "video.mp4").name
    if options.resume:
        source = Path(options.out)
        for path, copy in (
            (source, out),
            (sidecar_path(source), sidecar_path(out)),
            (resume_path(source), resume_path(out)),
        ):
            if path.is_file():
                shutil.copyfile(path, copy)
        if parts_path(source).is_dir():
            shutil.copytree(parts_path(source), parts_path(out))
    return dataclasses.replace(options, out=str(out), overwrite=not options.resume, preview=None)


def run_parallel(
    args: argparse.Namespace, launch: Launch, options: GenerationOptions, load: LoadOptions, threads: int
) -> GenerationResult:
    """`framepack generate` on this process of a `--parallel N` launch (checked by
    `check_launch`); process 0 writes the video, the others a scratch copy they delete."""
    from framepack.models.parallel import SequenceParallel, engine_attn_type
    from framepack.pipeline import FramePackPipeline
    from framepack.runtime import use_threads

    device = join_group(args.device, launch.local_rank)
    use_threads(threads)
    pipe = FramePackPipeline.from_pretrained(args.model, dataclasses.replace(load, device=str(device)))
    c = pipe.components
    c.transformer = SequenceParallel(c.transformer, attn_type=engine_attn_type(c.device, c.dtype))
    if launch.rank == 0:
        return pipe.generate(options, progress=not args.quiet)
    with tempfile.TemporaryDirectory(prefix=f"framepack-rank{launch.rank}-") as scratch:
        return pipe.generate(follower_options(options, Path(scratch)), progress=False)
