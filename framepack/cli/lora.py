"""`framepack lora`: LoRA training for the released models (docs/lora.md).

framepack lora cache   --data CLIPS --cache CACHE [--model-dir DIR]   encode once (VAE, text, SigLIP)
framepack lora train   --cache CACHE --out RUN [--model hunyuan-inverted] [--rank 32] ...
framepack lora convert IN.safetensors OUT.safetensors --to kohya|diffusers
framepack lora memory  [--rank 32] [--bucket 384 512 640]            GPU memory estimates
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from framepack.errors import UserError

MAX_WINDOW = 64  # latent frames per section `lora memory` estimates (the released models use 9)

# train flags that map one to one onto LoraTrainConfig fields (None = not given)
TRAIN_FIELDS: dict[str, tuple[type, str]] = {
    "model": (str, "hunyuan-inverted or hunyuan-f1 (default: hunyuan-inverted)"),
    "mode": (str, "released (the released index layouts, default) or general (true times + --schedule)"),
    "schedule": (str, "general mode's packing schedule (default released)"),
    "window": (int, "latent frames per section (default 9)"),
    "rank": (int, "LoRA rank (default 32)"),
    "alpha": (float, "LoRA alpha; scale = alpha / rank (default: the rank)"),
    "targets": (str, "attn-mlp (default, as musubi-tuner) or attn"),
    "dropout": (float, "dropout on the adapters' input (default 0)"),
    "steps": (int, "optimizer steps (default 1000)"),
    "batch_size": (int, "sections per optimizer step, over all processes (default 1)"),
    "lr": (float, "learning rate (default 1e-4)"),
    "warmup_steps": (int, "linear warm-up steps (default 0)"),
    "cooldown_steps": (int, "linear decay to 0 over the last steps (default 0)"),
    "weight_decay": (float, "AdamW weight decay (default 0.01)"),
    "sigma_shift": (float, "time shift of the training noise levels (default 3)"),
    "guidance": (float, "distilled guidance fed to the model (default 10)"),
    "dtype": (str, "base weights: auto (bf16 on CUDA), bf16, fp32"),
    "strategy": (str, "several processes: ddp (default) or fsdp"),
    "seed": (int, "seed of the adapters' init and of every sample (default 0)"),
    "checkpoint_every": (int, "steps between checkpoints and LoRA files (default 100)"),
    "keep_checkpoints": (int, "checkpoints kept (default 2)"),
    "threads": (int, "CPU threads (default: torch's)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="lora_command", metavar="ACTION", required=True)

    cache = sub.add_parser("cache", help="encode a folder of captioned videos/images into a latent cache")
    cache.add_argument("--data", required=True, help="folder of videos/images, each with a .txt caption")
    cache.add_argument("--cache", required=True, help="output folder of the latent cache")
    cache.add_argument(
        "--model-dir", help="folder holding HunyuanVideo/ and flux_redux_bfl/ (or an HF cache)"
    )
    cache.add_argument("--bucket", type=int, default=640, help="resolution bucket (default 640)")
    cache.add_argument("--fps", type=float, default=30.0, help="frames per second of the clips (default 30)")
    cache.add_argument(
        "--clip-latents", type=int, default=18, help="latents after the start frame per clip (default 18)"
    )
    cache.add_argument(
        "--image-latents", type=int, default=9, help="latents of an image's still clip (default 9)"
    )
    cache.add_argument(
        "--clips-per-video", type=int, default=1, help="consecutive clips per video (default 1)"
    )
    cache.add_argument("--default-caption", help="caption for files without a .txt (default: refuse them)")
    cache.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    cache.add_argument("--dtype", default="auto", help="encoders: auto (fp16 on CUDA, fp32 on CPU), fp32")
    cache.add_argument("--vae-tiling", action="store_true", help="encode in spatial tiles (less VRAM)")
    cache.add_argument("--no-progress", action="store_true")

    train = sub.add_parser("train", help="train a LoRA from a latent cache")
    train.add_argument("--cache", help="the latent cache (default on --resume: the run's)")
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument("--model-dir", help="folder holding the released transformer (or an HF cache)")
    train.add_argument("--transformer-dir", help="the released transformer folder itself")
    train.add_argument("--config", help="JSON file of LoraTrainConfig fields (flags override it)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    for name, (kind, help_text) in TRAIN_FIELDS.items():
        train.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=help_text)
    train.add_argument("--layouts", nargs="+", help="section layouts (default: the model's own)")
    train.add_argument("--low-vram", action="store_true", default=None, help="stream blocks from CPU memory")
    train.add_argument(
        "--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false", default=None
    )
    train.add_argument("--no-progress", action="store_true")

    convert = sub.add_parser("convert", help="rewrite a FramePack LoRA in kohya/musubi or diffusers naming")
    convert.add_argument("input")
    convert.add_argument("output")
    convert.add_argument("--to", required=True, choices=("kohya", "diffusers"))
    convert.add_argument("--overwrite", action="store_true", help="replace an existing OUT file")

    memory = sub.add_parser("memory", help="GPU memory estimates of LoRA training on the 13B model")
    memory.add_argument("--rank", type=int, default=32)
    memory.add_argument("--targets", default="attn-mlp")
    memory.add_argument("--window", type=int, default=9)
    memory.add_argument("--bucket", type=int, nargs="+", default=[384, 512, 640])


def run(args: argparse.Namespace) -> int:
    return {"cache": run_cache, "train": run_train, "convert": run_convert, "memory": run_memory}[
        args.lora_command
    ](args)


def run_cache(args: argparse.Namespace) -> int:
    from framepack.hunyuan.latent_cache import CacheSettings, HunyuanEncoders, build_cache, scan_data

    try:
        settings = CacheSettings(
            args.bucket,
            args.fps,
            args.clip_latents,
            args.image_latents,
            args.clips_per_video,
            args.default_caption,
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    scan_data(args.data, settings.default_caption)  # refuse a bad folder before loading the encoders
    encoders = HunyuanEncoders.from_dir(args.model_dir, args.device, args.dtype, args.vae_tiling)
    entries = build_cache(args.data, args.cache, encoders, settings, progress=not args.no_progress)
    print(f"{len(entries)} clips cached in {args.cache}")
    return 0


def train_config(args: argparse.Namespace, saved: dict[str, Any] | None) -> Any:
    """The run's config: saved (on resume) or --config JSON, then the flags given."""
    from framepack.lora_train.config import LoraTrainConfig
    from framepack.schema import read_json_object

    raw: dict[str, Any] = dict(saved or {})
    if args.config:
        raw.update(read_json_object(args.config, "--config", "LoraTrainConfig fields"))
    names = [*TRAIN_FIELDS, "layouts", "low_vram", "gradient_checkpointing"]
    flags = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    raw.update(flags)
    try:
        return LoraTrainConfig.from_dict(raw)
    except (ValueError, TypeError) as err:
        key = next((k for k in flags if re.search(rf"\b{k}\b", str(err))), None)  # a flag's field
        if key is not None:
            source = "--" + key.replace("_", "-")
        else:
            source = f"--config {args.config}" if args.config else f"{Path(args.out) / 'config.json'}"
        raise UserError(f"{source}: {err}") from None


def run_train(args: argparse.Namespace) -> int:
    from framepack.lora_train.loop import Sources, locate_transformer, train_lora
    from framepack.schema import read_json_object
    from framepack.train.distributed import Distributed

    saved_path = Path(args.out) / "config.json"
    saved = None
    if args.resume and saved_path.is_file():
        saved = read_json_object(saved_path, "run config", "the run's config and sources")
        if not isinstance(saved.get("config"), dict):
            raise UserError(
                f'run config {saved_path} holds no "config" object; restore the file or start over'
            )
    config = train_config(args, saved["config"] if saved else None)
    cache = args.cache or (saved or {}).get("cache")
    if cache is None:
        raise UserError("--cache is required (the folder written by `framepack lora cache`)")
    transformer = args.transformer_dir or (None if args.model_dir else (saved or {}).get("transformer"))
    transformer = locate_transformer(config.model, args.model_dir, transformer)
    run = train_lora(
        config, args.out, Sources(str(cache), transformer), resume=args.resume, progress=not args.no_progress
    )
    print(
        f"LoRA written to {run / 'lora.safetensors'} (kohya / musubi naming) and lora.diffusers.safetensors"
    )
    Distributed.from_env().leave()
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from framepack.lora import load_lora_file, parse_lora, released_module_names
    from framepack.lora_train.adapters import save_lora
    from framepack.video import check_output_path

    source, target = Path(args.input), Path(args.output)
    if not source.is_file():
        raise UserError(
            f"LoRA file {source} does not exist" + (" (it is a folder)" if source.is_dir() else "")
        )
    if source.exists() and (target == source or (target.exists() and target.samefile(source))):
        raise UserError(
            f"OUT {target} is the input file; give another output name (the input is never rewritten)"
        )
    check_output_path(target, args.overwrite, (".safetensors",), flag="OUT")  # exists, a folder, no folder...
    pairs, unknown = parse_lora(load_lora_file(args.input), released_module_names())
    if unknown or not pairs:
        example = unknown[0] if unknown else "-"
        raise UserError(
            f"{args.input}: {len(unknown)} keys name no module of the released transformer (e.g. {example!r})"
        )
    save_lora(args.output, pairs, args.to)
    print(f"{len(pairs)} modules written to {args.output} ({args.to} naming)")
    return 0


def run_memory(args: argparse.Namespace) -> int:
    from framepack.lora_train.adapters import LoraSpec
    from framepack.lora_train.memory import memory_table

    if not 1 <= args.window <= MAX_WINDOW:
        raise UserError(f"--window must be between 1 and {MAX_WINDOW} latent frames, got {args.window}")
    for bucket in args.bucket:
        if not 16 <= bucket <= 4096:
            raise UserError(f"--bucket must be between 16 and 4096 pixels, got {bucket}")
    if not 1 <= args.rank <= 4096:
        raise UserError(f"--rank must be between 1 and 4096, got {args.rank}")
    try:
        print(memory_table(tuple(args.bucket), LoraSpec(rank=args.rank, targets=args.targets), args.window))
    except ValueError as err:
        raise UserError(str(err)) from None
    return 0
