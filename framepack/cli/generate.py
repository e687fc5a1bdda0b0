"""`framepack generate`: an image (or nothing) and a prompt in, a long video out.

With no arguments it runs the bundled demo model on the bundled example image and prompt and
writes `outputs/<timestamp>.mp4`. The work is done by `framepack.pipeline`, which the Python
API uses too.
"""

from __future__ import annotations

import argparse
import math
import shlex
from typing import Any

from framepack.errors import UserError
from framepack.options import (
    DTYPES,
    PLANS,
    RANKINGS,
    SAMPLERS,
    GenerationOptions,
    LoadOptions,
    parse_keyframe,
)

OPTS, LOAD = GenerationOptions(), LoadOptions()  # the CLI's defaults are the API's
# Flags that set a `GenerationOptions` field of the same name; unset ones stay None (untyped).
OPTION_FLAGS = (
    "prompt", "prompts", "negative_prompt", "image", "no_image", "end_image", "extend", "seconds",
    "fps", "seed", "steps", "plan", "sampler", "shift", "guidance", "cfg", "cfg_rescale", "out",
    "overwrite", "resume", "preview", "crf", "history_noise", "history_cfg", "ranking",
)  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("conditioning")
    g.add_argument("--image", help="start image (image-to-video); default: the model's example image")
    g.add_argument("--no-image", action="store_true", help="text-to-video: no start image")
    g.add_argument("--prompt", help="one prompt for the whole video")
    g.add_argument("--prompts", help="a prompt timeline, e.g. '0s: a man walks; 4s: he turns and waves'")
    g.add_argument("--negative-prompt", help="negative prompt (used when --cfg > 1)")
    g.add_argument("--end-image", help="image the video should end on")
    g.add_argument(
        "--keyframe",
        action="append",
        default=[],
        metavar="TIME=PATH",
        help="keyframe image at a time in seconds (repeatable), e.g. --keyframe 4s=pose.png",
    )
    g.add_argument("--extend", metavar="VIDEO", help="continue this video (its frames become the history)")

    g = p.add_argument_group("length and sampling")
    g.add_argument(
        "--seconds",
        type=float,
        help=f"video length in seconds (default {OPTS.seconds:g})",
    )
    g.add_argument("--fps", type=int, help="frames per second (default: the model's)")
    g.add_argument("--seed", type=int, help=f"seed; same seed, same video (default {OPTS.seed})")
    g.add_argument("--steps", type=int, help="sampling steps per section (default: the model's)")
    g.add_argument("--plan", choices=PLANS, help="section order (default: the model's)")
    g.add_argument(
        "--sampler",
        choices=SAMPLERS,
        help="sampler (default: the model's; unipc, euler for distilled students)",
    )
    g.add_argument("--shift", type=float, help="sigma shift (default: the model's)")
    g.add_argument("--guidance", type=float, help="distilled guidance (default: the model's)")
    g.add_argument(
        "--cfg", type=float, help="real classifier-free guidance scale (1 = off; default: the model's)"
    )
    g.add_argument("--cfg-rescale", type=float, help="guidance rescale in [0, 1] (default 0)")

    g = p.add_argument_group("drift research (docs/drift.md)")
    g.add_argument(
        "--history-noise", type=float, metavar="SIGMA",
        help="add noise of this std to the generated history each section sees (diffusion forcing)",
    )  # fmt: skip
    g.add_argument(
        "--history-cfg", type=float, metavar="S",
        help="guidance against dropped history (1 = off; for models trained with history_dropout)",
    )  # fmt: skip
    g.add_argument(
        "--ranking", choices=RANKINGS,
        help="which history frames get the finest levels: time (nearest), similarity, hybrid",
    )  # fmt: skip

    g = p.add_argument_group("model and device")
    g.add_argument("--model", help="demo (bundled, the default), hunyuan-inverted, hunyuan-f1, or a PATH")
    g.add_argument("--model-dir", help="folder (or Hugging Face cache) holding the released model parts")
    g.add_argument("--device", default=LOAD.device, help="auto, cpu, cuda, cuda:1 ...")
    g.add_argument("--dtype", choices=DTYPES, default=LOAD.dtype)
    g.add_argument("--bucket", type=int, help="resolution bucket around N x N pixels (released models; 640)")
    g.add_argument(
        "--low-vram", action="store_true", help="stream the encoders' layers and the transformer's blocks"
    )
    g.add_argument(
        "--vram-gb", type=float, metavar="G",
        help="GPU memory budget in GiB: low-VRAM mode keeps every phase under it (e.g. 6)",
    )  # fmt: skip
    g.add_argument(
        "--pinned-gb", type=float, metavar="G",
        help="pinned host memory for streamed blocks (default: a quarter of the RAM, at most 8)",
    )  # fmt: skip
    g.add_argument(
        "--estimate", action="store_true",
        help="print the GPU memory of every phase (released models; no weights needed) and exit",
    )  # fmt: skip
    g.add_argument(
        "--threads", type=int, help="CPU threads (default: OMP_NUM_THREADS, else half the cores, 1-8)"
    )
    g.add_argument(
        "--teacache", type=float, default=LOAD.teacache, help="TeaCache threshold (0 = off; e.g. 0.15)"
    )
    g.add_argument(
        "--lora", action="append", default=[], metavar="PATH[:SCALE]", help="LoRA file (repeatable)"
    )

    g = p.add_argument_group("output")
    g.add_argument("--out", help="output .mp4 (default outputs/<timestamp>.mp4)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    g.add_argument(
        "--resume",
        action="store_true",
        help="finish the stopped job writing --out (its settings come from its resume data)",
    )
    g.add_argument(
        "--preview",
        metavar="DIR",
        help="keep a decoded preview of each section's newest estimate here (one PNG per section)",
    )
    g.add_argument(
        "--crf", type=int, default=OPTS.crf, help=f"H.264 quality (0 best .. 51 worst, default {OPTS.crf})"
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")

    g = p.add_argument_group("several GPUs")
    g.add_argument(
        "--parallel",
        type=int,
        metavar="N",
        help="split each step over N processes (sequence parallel; released models, under torchrun "
        "--nproc_per_node N; docs/hunyuan.md)",
    )


def options_from_args(args: argparse.Namespace) -> GenerationOptions:
    """The job's options: the flags given, the API's defaults for the rest."""
    return GenerationOptions(**given_options(args))


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `GenerationOptions` fields the user typed a flag for (`--resume` checks these)."""
    values = {name: getattr(args, name) for name in OPTION_FLAGS}
    values["keyframes"] = [parse_keyframe(k) for k in args.keyframe]
    return {k: v for k, v in values.items() if v is not None and v is not False and v != []}


def load_options_from_args(args: argparse.Namespace) -> LoadOptions:
    """How to load the model (`--model-dir`, `--device`, `--bucket`, `--lora` ...), checked."""
    from framepack.components import LoadOptions

    if args.bucket is not None and not 16 <= args.bucket <= 4096:
        raise UserError(f"--bucket must be between 16 and 4096 pixels, got {args.bucket}")
    for flag, value in (("--vram-gb", args.vram_gb), ("--pinned-gb", args.pinned_gb)):
        if value is not None and not (math.isfinite(value) and 0 <= value <= 4096):
            raise UserError(f"{flag} must be a number of GiB between 0 and 4096, got {value}")
    if args.vram_gb == 0:
        raise UserError("--vram-gb must be more than 0 (e.g. --vram-gb 6)")
    return LoadOptions(
        model_dir=args.model_dir,
        device=args.device,
        dtype=args.dtype,
        low_vram=args.low_vram,
        vram_gb=args.vram_gb,
        pinned_gb=args.pinned_gb,
        bucket=args.bucket,
        teacache=args.teacache,
        loras=list(args.lora),
    )


def run(args: argparse.Namespace) -> int:
    from framepack.pipeline import FramePackPipeline
    from framepack.runtime import check_threads, use_threads

    if args.estimate:
        args.model = args.model or "demo"
        return print_estimate(args)
    options = options_from_args(args)
    if args.resume:
        options = resume_settings(args, options)
    args.model = args.model or "demo"
    launch = None
    if args.parallel not in (None, 1):  # refused in one line before anything loads
        from framepack.cli.generate_parallel import check_launch

        launch = check_launch(args)
    options.validate()
    threads = check_threads(args.threads)
    load = load_options_from_args(args)
    if launch is not None:
        from framepack.cli.generate_parallel import run_parallel

        result = run_parallel(args, launch, options, load, threads)
        if launch.rank != 0:
            return 130 if result.stopped else 0
        return report(result, resume_command(args))
    use_threads(threads)
    pipe = FramePackPipeline.from_pretrained(args.model, load)
    return report(pipe.generate(options, progress=not args.quiet), resume_command(args))


def print_estimate(args: argparse.Namespace) -> int:
    """`--estimate`: the memory plan of a released model at the largest bucket, from its configs."""
    from framepack.hunyuan.budget import plan_memory, released_sizes
    from framepack.hunyuan.components import DEFAULT_BUCKET, largest_latent, pinned_bytes, released_spec

    if args.model not in ("hunyuan-inverted", "hunyuan-f1"):
        raise UserError(
            f"--estimate covers the released models (hunyuan-inverted, hunyuan-f1), not {args.model!r}"
        )
    load = load_options_from_args(args)
    spec = released_spec(args.model, args.bucket or DEFAULT_BUCKET)
    sizes = released_sizes(largest_latent(spec.bucket), spec.window)
    low = load.low_vram or load.vram_gb is not None
    plan = plan_memory(sizes, low_vram=low, budget=load.vram_budget(), pin_limit=pinned_bytes(load))
    h, w = sizes.latent_hw
    print(f"{args.model} at bucket {spec.bucket} (largest: {8 * h}x{8 * w} pixels, window {spec.window}):")
    print(plan)
    return 0


def resume_settings(args: argparse.Namespace, options: GenerationOptions) -> GenerationOptions:
    """`--resume --out X`: the stopped job's settings from its resume state, the flags typed
    checked against them (framepack.resume_options); `--model`, if not typed, from the state too
    (a released model by its name, else the demo: a model folder must be given again)."""
    from framepack.resume import load_state, resume_path
    from framepack.resume_options import resumed_options

    if options.out is None or not resume_path(options.out).is_file():
        return options  # nothing saved: the pipeline starts the job, or refuses in one line
    settings = load_state(resume_path(options.out)).settings
    if args.model is None:
        saved = settings.get("model")
        args.model = saved if saved in ("hunyuan-inverted", "hunyuan-f1") else "demo"
    return resumed_options(options, settings, given_options(args), options.out)


def resume_command(args: argparse.Namespace) -> list[str]:
    """The command that finishes this job: `framepack generate --resume --out X` (and the model's
    flags when it is not the demo)."""
    model = [] if args.model == "demo" else ["--model", args.model]
    model += ["--model-dir", args.model_dir] if args.model_dir else []
    return ["framepack", "generate", *model, "--resume", "--out"]


def report(result, resume: list[str] | None = None) -> int:
    """Print where the video went; the exit status (130: stopped, as a shell reports Ctrl-C)."""
    if result.stopped:
        command = shlex.join([*(resume or ["framepack", "generate", "--resume", "--out"]), str(result.path)])
        print(f"{result.path}: stopped after {result.frames} frames; finish it with: {command}")
        return 130  # interrupted, as a shell reports Ctrl-C
    print(f"{result.path} ({result.frames} frames, {result.seconds:.2f} s)")
    return 0
