"""`framepack eval`: evaluation tools, one sub-subcommand each (`framepack eval drift VIDEO`).

To add an evaluation, write `add_<name>(parser)` and `run_<name>(args) -> int` and list them
in `EVALS`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable


def add_drift(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="video file to measure (e.g. out.mp4)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.add_argument(
        "--section-frames",
        type=int,
        metavar="N",
        help="frames per generated section, to measure seam spikes "
        "(default: the video's metadata 'section_frames', if present)",
    )
    parser.add_argument("--max-frames", type=int, metavar="N", help="measure only the first N frames")


def run_drift(args: argparse.Namespace) -> int:
    from framepack.errors import UserError
    from framepack.eval.drift import drift_report, format_report
    from framepack.video import read_metadata, read_video

    for flag in ("section_frames", "max_frames"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be a positive number of frames, got {value}")
    frames, fps = read_video(args.video, max_frames=args.max_frames)
    if len(frames) < 2:
        raise UserError(f"{args.video} has {len(frames)} frame; drift needs at least 2 frames")
    if min(frames.shape[1:3]) < 3:
        raise UserError(
            f"{args.video} is {frames.shape[2]}x{frames.shape[1]}; drift needs at least 3x3 pixels"
        )
    section_frames, boundaries = args.section_frames, None
    if section_frames is None:
        settings = read_metadata(args.video)
        boundaries = _int_list(settings.get("section_boundaries"))
        section_frames = _positive_int(settings.get("section_frames"))
    report = drift_report(frames, fps, section_frames=section_frames, boundaries=boundaries)
    report["video"] = str(args.video)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _int_list(value: object) -> list[int] | None:
    if isinstance(value, list) and value and all(_positive_int(v) for v in value):
        return value
    return None


# name -> (help, add_arguments, run)
EVALS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {
    "drift": ("weight-free drift metrics: start-end contrast and seam spikes", add_drift, run_drift),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="EVAL", required=True)
    for name, (help_text, add, _) in EVALS.items():
        add(sub.add_parser(name, help=help_text, description=help_text))


def run(args: argparse.Namespace) -> int:
    return EVALS[args.eval_command][2](args)
