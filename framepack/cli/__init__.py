"""The `framepack` command: a thin dispatcher over one module per subcommand.

Each subcommand lives in `framepack/cli/<name>.py` and defines
`add_arguments(parser: argparse.ArgumentParser) -> None` and `run(args) -> int`. Modules are
imported lazily so `framepack --help` stays fast and heavy imports happen only when needed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from framepack.errors import UserError

# subcommand name -> (module under framepack.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("generate", "generate a video (default: the bundled demo model and example)"),
    "pack-info": ("pack_info", "print the token budget of a packing schedule"),
    "world": ("world", "render a clip of the procedural world with its ground truth"),
    "train": ("train", "train or finetune a packed next-section model"),
    "eval": ("eval", "evaluation tools (drift metrics)"),
    "ui": ("ui", "the web UI: a page with a persistent job queue and a gallery"),
    "queue": ("queue", "the web UI's job queue from the shell: add, list, run, move, cancel, retry"),
    "codec": ("codec", "train and measure the demo's learned video autoencoder"),
    "distill": ("distill", "distil a model into a student that samples a section in 4 steps or fewer"),
    "lora": ("lora", "LoRA training for the released models: cache, train, convert, memory"),
    "download": ("download", "fetch the released weights (hunyuan-inverted, hunyuan-f1; about 40 GB)"),
}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = OneLineParser(prog="framepack", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the requested subcommand's module is imported.
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            importlib.import_module(f"framepack.cli.{module}").add_arguments(p)
    return parser


def _version() -> str:
    from framepack import __version__

    return f"framepack {__version__}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(f"framepack.cli.{COMMANDS[args.command][0]}")
    try:
        return int(module.run(args) or 0)
    except UserError as err:
        print(f"framepack {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"framepack {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `framepack queue list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except MemoryError:
        print(
            f"framepack {args.command}: error: out of memory; ask for less (a shorter or smaller "
            "video, a smaller batch) or free memory",
            file=sys.stderr,
        )
        return 2
    except Exception as err:  # what the disk refused where no writer named it (framepack.disk)
        from framepack.disk import disk_error

        refused = disk_error(err, doing="use")
        if refused is None:
            raise
        print(f"framepack {args.command}: error: {refused}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
