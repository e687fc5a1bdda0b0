"""`framepack download hunyuan-inverted|hunyuan-f1 [--dir DIR]`: fetch the released weights."""

from __future__ import annotations

import argparse

MODELS = ("hunyuan-inverted", "hunyuan-f1")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", choices=MODELS, help="the released model whose files to fetch")
    p.add_argument(
        "--dir",
        help="put the three repositories in DIR/<name>/ (then generate with --model-dir DIR); "
        "default: the Hugging Face cache, which generate searches without --model-dir",
    )


def run(args: argparse.Namespace) -> int:
    from framepack.hunyuan.download import download

    download(args.model, args.dir)
    return 0
