"""`framepack codec`: train and measure the demo's learned video autoencoder.

framepack codec train --out runs/ae                 # the demo codec (configs/codec-demo.json's defaults)
framepack codec train --out runs/ae --resume [--steps N]
framepack codec train --out runs/ae --export        # write runs/ae/codec from the latest checkpoint
framepack codec eval runs/ae/codec [--clips 16]     # the card on held-out clips, as JSON
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from framepack.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = sub.add_parser("train", help="train (or resume) the causal video autoencoder on the world")
    t.add_argument("--out", type=Path, required=True, help="run directory")
    t.add_argument("--config", type=Path, help="JSON of CodecTrainConfig fields (default: the demo's)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--steps", type=int, help="total steps (on --resume: extend or shorten the run)")
    t.add_argument("--init", type=Path, help="start from another run's latest EMA weights (a finetune)")
    t.add_argument("--export", action="store_true", help="only write --out/codec from the latest checkpoint")
    t.add_argument("--threads", type=int, default=None, help="intra-op threads (default: runtime default)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    c = sub.add_parser("cache", help="encode world training videos once, for data.kind = latents")
    c.add_argument("--codec", type=Path, required=True, help="a trained autoencoder folder")
    c.add_argument("--out", type=Path, required=True, help="cache folder (an interrupted build resumes)")
    c.add_argument("--videos", type=int, default=4000, help="world videos to encode (default 4000)")
    c.add_argument("--clip-latents", type=int, default=22, help="latents per cached window (default 22)")
    c.add_argument("--seconds", type=float, default=64.0, help="length of the world videos (default 64)")
    c.add_argument("--size", type=int, default=64)
    c.add_argument("--fps", type=float, default=30.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--threads", type=int, default=None)
    c.add_argument("--quiet", action="store_true")
    e = sub.add_parser("eval", help="measure a trained autoencoder on held-out clips (JSON)")
    e.add_argument("path", type=Path, help="an autoencoder folder (config.json + model.safetensors)")
    e.add_argument("--clips", type=int, default=16)
    e.add_argument("--seconds", type=float, default=2.0)


def run(args: argparse.Namespace) -> int:
    from framepack.runtime import check_threads, use_threads

    if args.action == "eval":
        return _eval(args)
    use_threads(check_threads(args.threads))
    if args.action == "cache":
        return _cache(args)
    from framepack.codecs.autoencoder_train import export_codec, train_codec
    from framepack.eval.metrics import report_json

    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if args.export:
        codec = export_codec(args.out)
        print(report_json(codec.card, indent=2))
        return 0
    config = None if args.resume else _read_config(args.config, args.steps)
    bar = _bar(args.quiet)
    codec = train_codec(args.out, config, resume=args.resume, steps=args.steps, init=args.init, progress=bar)
    print(f"codec written to {args.out / 'codec'}")
    print(report_json(codec.card, indent=2))
    return 0


def _read_config(path: Path | None, steps: int | None) -> object:
    from framepack.codecs.autoencoder_train import CodecTrainConfig

    data: dict = {}
    if path is not None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"--config {path}: cannot read JSON ({err})") from None
        if not isinstance(data, dict):
            raise UserError(f"--config {path}: must hold a JSON object of CodecTrainConfig fields")
    if steps is not None:
        data["steps"] = steps
    try:
        return CodecTrainConfig.from_dict(data)
    except (ValueError, TypeError) as err:
        raise UserError(f"--config {path}: {err}") from None


def _bar(quiet: bool):
    if quiet:
        return None
    from tqdm.auto import tqdm

    state: dict = {}

    def progress(step: int, total: int, row: dict) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, initial=step - 1, desc="codec", unit="step")
        bar = state["bar"]
        bar.update(step - bar.n)
        bar.set_postfix(loss=row["loss"])
        if step >= total:
            bar.close()

    return progress


def _eval(args: argparse.Namespace) -> int:
    from framepack.codecs.autoencoder import AutoencoderCodec
    from framepack.eval.codec import codec_card
    from framepack.eval.metrics import report_json

    if args.clips < 1 or not 0 < args.seconds <= 60:
        raise UserError("--clips must be >= 1 and --seconds in (0, 60]")
    codec = AutoencoderCodec.load(args.path)
    print(report_json(codec_card(codec, clips=args.clips, seconds=args.seconds), indent=2))
    return 0


def _cache(args: argparse.Namespace) -> int:
    from framepack.codecs.autoencoder import AutoencoderCodec
    from framepack.train.data import WorldSource
    from framepack.train.latent_cache import build_latent_cache

    if args.videos < 1 or args.clip_latents < 1 or args.seconds <= 0 or args.size % 8 or args.fps <= 0:
        raise UserError(
            "need --videos >= 1, --clip-latents >= 1, --seconds > 0, --size a multiple of 8, --fps > 0"
        )
    codec = AutoencoderCodec.load(args.codec)
    codec.path = str(args.codec.resolve())
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        state: dict = {}

        def bar(done: int, total: int) -> None:
            state.setdefault(
                "bar", tqdm(total=total, initial=done - 1, desc="encoding", unit="video")
            ).update(1)

    source = WorldSource(args.seconds, args.size, args.fps, args.seed, args.videos)
    root = build_latent_cache(
        codec, args.out, source, videos=args.videos, clip_latents=args.clip_latents, seconds=args.seconds,
        size=args.size, fps=args.fps, seed=args.seed, progress=bar,
    )  # fmt: skip
    print(f"latent cache written to {root}")
    return 0
