"""`framepack eval`: evaluation tools, one sub-subcommand each (`framepack eval drift VIDEO`).

To add an evaluation, write `add_<name>(parser)` and `run_<name>(args) -> int` and list them
in `EVALS`.
"""

from __future__ import annotations

import argparse
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
    from framepack.eval.metrics import report_json
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
    settings = read_metadata(args.video)
    if section_frames is None:
        boundaries = _int_list(settings.get("section_boundaries"))
        section_frames = _positive_int(settings.get("section_frames"))
    latent = _int_list(settings.get("latent_boundaries"))
    report = drift_report(
        frames, fps, section_frames=section_frames, boundaries=boundaries, latent_boundaries=latent
    )
    report["video"] = str(args.video)
    print(report_json(report, indent=2) if args.json else format_report(report))
    return 0


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _int_list(value: object) -> list[int] | None:
    if isinstance(value, list) and value and all(_positive_int(v) for v in value):
        return value
    return None


def add_sheet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", help="videos to show one under the other (e.g. generated, true)")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--every", type=int, default=15, help="show every N-th frame (default 15)")
    parser.add_argument("--columns", type=int, default=10, help="frames per row (default 10)")
    parser.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscaling (default 2)")
    parser.add_argument("--max-frames", type=int, metavar="N", help="read only the first N frames")
    parser.add_argument("--names", help="comma-separated row names, one per video")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing PNG")


def run_sheet(args: argparse.Namespace) -> int:
    from pathlib import Path

    from framepack.errors import UserError
    from framepack.eval.sheet import contact_sheet
    from framepack.video import atomic_path, check_output_path, read_video

    for flag in ("every", "columns", "scale", "max_frames"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be a positive number, got {value}")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out} must end in .png")
    check_output_path(out, args.overwrite)
    names = args.names.split(",") if args.names else None
    if names is not None and len(names) != len(args.videos):
        raise UserError(f"--names gives {len(names)} names for {len(args.videos)} videos; give one per video")
    read = [read_video(v, max_frames=args.max_frames) for v in args.videos]
    if any(frames.shape[1:] != read[0][0].shape[1:] for frames, _ in read):
        raise UserError("the videos have different frame sizes; give videos of one size")
    sheet = contact_sheet([f for f, _ in read], read[0][1], every=args.every, columns=args.columns,
                          scale=args.scale, names=names)  # fmt: skip
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    print(f"wrote {out} ({sheet.width}x{sheet.height})")
    return 0


# name -> (help, add_arguments, run)
EVALS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {
    "drift": ("weight-free drift metrics: start-end contrast and seam spikes", add_drift, run_drift),
    "sheet": ("contact sheet: every N-th frame of videos, upscaled, with times", add_sheet, run_sheet),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="EVAL", required=True)
    for name, (help_text, add, _) in EVALS.items():
        add(sub.add_parser(name, help=help_text, description=help_text))


def run(args: argparse.Namespace) -> int:
    return EVALS[args.eval_command][2](args)
