"""`framepack world`: render a clip of the procedural world and its ground truth.

Writes the video (H.264, yuv420p) to --out and the ground truth next to it as JSON (same name,
.json): the script, the caption timeline, and per frame the camera position and object states.
"""

from __future__ import annotations

import argparse
import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from framepack.disk import atomic_path, check_names
from framepack.errors import UserError

MAX_SIZE = 1024  # a 10-s clip at 1024x1024 is 0.9 GB of frames in memory
MIN_SIZE = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="world and script seed (default 0)")
    parser.add_argument("--seconds", type=float, default=5.0, help="clip duration in seconds (default 5)")
    parser.add_argument(
        "--size", type=int, default=64, help="frame height and width, a multiple of 8 (default 64)"
    )
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    parser.add_argument(
        "--script",
        default=None,
        help='explicit camera script, e.g. "right 2 slowly, hold 1, left 2 slowly" '
        "(direction seconds [slowly|steadily|quickly|px/s]); default: a random script from --seed",
    )
    parser.add_argument(
        "--start", type=int, nargs=2, metavar=("X", "Y"), default=None, help="camera start for --script"
    )
    parser.add_argument("--crf", type=int, default=18, help="H.264 quality, 0 (best) to 51 (default 18)")
    parser.add_argument(
        "--out", required=True, type=Path, help="output video path (.mp4); truth goes to .json beside it"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def run(args: argparse.Namespace) -> int:
    from framepack.data.world import World, render_clip
    from framepack.data.world_script import format_timeline, parse_script, random_script

    _validate(args)
    out: Path = args.out
    truth_path = out.with_suffix(".json")
    for path in (out, truth_path):
        if path.exists() and not args.overwrite:
            raise UserError(f"{path} already exists; pass --overwrite to replace it or choose another --out")

    if args.script is not None:
        try:
            script = parse_script(args.script, tuple(args.start or (0, 0)))
        except (ValueError, KeyError) as err:
            raise UserError(f"bad --script: {err}") from None
    else:
        script = random_script(args.seed, args.seconds, args.fps)
    num_frames = max(1, round(args.seconds * args.fps))
    clip = render_clip(World(args.seed), script, args.size, args.fps, num_frames)

    _write_mp4(out, clip.frames, args.fps, args.crf)  # atomic: a refusal names the file, leaves none
    _write_text(truth_path, json.dumps(clip.to_json()))
    print(f"wrote {out} ({num_frames} frames, {args.size}x{args.size}, {args.fps:g} fps) and {truth_path}")
    print(f"captions: {format_timeline(clip.captions)}")
    return 0


def _validate(args: argparse.Namespace) -> None:
    if not (args.seconds > 0 and np.isfinite(args.seconds)):
        raise UserError(f"--seconds must be a positive number, got {args.seconds:g}")
    if not (0 < args.fps <= 240):
        raise UserError(f"--fps must be in (0, 240], got {args.fps:g}")
    if args.size < MIN_SIZE or args.size % 8 or args.size > MAX_SIZE:
        raise UserError(
            f"--size must be a multiple of 8 from {MIN_SIZE} to {MAX_SIZE} pixels, got {args.size}"
        )
    if not 0 <= args.crf <= 51:
        raise UserError(f"--crf must be in 0..51, got {args.crf}")
    if round(args.seconds * args.fps) > 100_000:
        raise UserError("--seconds * --fps exceeds 100000 frames; render a shorter clip")
    if args.out.suffix.lower() != ".mp4":
        raise UserError(f"--out must end in .mp4, got {args.out}")
    check_names([args.out, args.out.with_suffix(".json")], "--out")
    parent = args.out.parent if str(args.out.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"folder {parent} does not exist; create it or choose another --out")
    if not os.access(parent, os.W_OK):
        raise UserError(f"folder {parent} is not writable; choose another --out")


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_mp4(path: Path, frames: np.ndarray, fps: float, crf: int) -> None:
    """Encode frames uint8 (F, H, W, 3) as H.264 yuv420p MP4, written atomically."""
    import av

    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
