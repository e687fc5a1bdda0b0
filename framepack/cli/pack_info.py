"""`framepack pack-info`: print the token budget of a packing schedule.

Example: `framepack pack-info --schedule geometric:lambda=2,depth=4 --history 100 --latent 64x64`.
Each level is listed in token order (coarsest first) with its kernel, frames and tokens, then the
context total, the noisy window and the grand total. `--json` prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re

from framepack.errors import UserError

_SCHEDULE_HELP = (
    "packing schedule: NAME or NAME:key=value,... (e.g. geometric:lambda=1.5,depth=4,tail=pool). "
    "Names: {names}. Parameters: lambda, depth (geometric, symmetric); depth, groups "
    "(temporal-duplication); depth, copies (level-duplication); for all: tail=delete|grow|pool, "
    "tail_kernel=TxHxW, pool_frames=N. Default: %(default)s"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from framepack.packing import SCHEDULES

    parser.add_argument(
        "--schedule", default="released-inverted", help=_SCHEDULE_HELP.format(names=", ".join(SCHEDULES))
    )
    parser.add_argument("--history", type=int, required=True, help="number of history latent frames N")
    parser.add_argument("--latent", required=True, help="latent size HxW, e.g. 64x64 (pixels / 8)")
    parser.add_argument("--window", type=int, default=9, help="noisy latent frames per section (default: 9)")
    parser.add_argument(
        "--anchors",
        type=int,
        default=1,
        help="uncompressed anchor frames at 1x, e.g. the start frame (default: 1)",
    )
    parser.add_argument(
        "--pad",
        choices=("zeros", "none"),
        default="zeros",
        help="fill a short history with zero latents like the released code (default), or not",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _parse_latent(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise UserError(f"--latent must look like 64x64 (latent height x width), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def budget(args: argparse.Namespace) -> dict:
    """The token budget as a JSON-able dict (what `--json` prints)."""
    from framepack.packing import BASE_KERNEL, SCHEDULES, check_latent_size, parse_schedule, token_count

    latent_hw = _parse_latent(args.latent)
    if args.history < 0:
        raise UserError(f"--history must be >= 0, got {args.history}")
    if args.window < 1:
        raise UserError(f"--window must be >= 1, got {args.window}")
    if args.anchors < 0:
        raise UserError(f"--anchors must be >= 0, got {args.anchors}")
    try:
        schedule = parse_schedule(args.schedule)
    except ValueError as err:
        hint = (
            ""
            if "schedule must be one of" in str(err)
            else f" (schedules: {', '.join(SCHEDULES)}; see --help)"
        )
        raise UserError(f"--schedule {args.schedule!r}: {err}{hint}") from None
    try:
        check_latent_size(schedule, latent_hw)
    except ValueError as err:
        raise UserError(f"--latent {args.latent}: {err}") from None
    slots = schedule.layout(args.history, anchors=args.anchors, pad=args.pad)
    levels = [
        {
            "name": s.name,
            "role": s.role,
            "kernel": list(s.kernel),
            "frames": s.total_frames,
            "anchors": s.anchors,
            "tokens": s.tokens(latent_hw),
        }
        for s in slots
    ]
    context = sum(lv["tokens"] for lv in levels)
    noisy = token_count(BASE_KERNEL, args.window, latent_hw)
    return {
        "schedule": schedule.name,
        "params": dict(schedule.params),
        "tail": schedule.tail,
        "history": args.history,
        "latent": list(latent_hw),
        "pad": args.pad,
        "levels": levels,
        "context_tokens": context,
        "noisy": {"kernel": list(BASE_KERNEL), "frames": args.window, "tokens": noisy},
        "total_tokens": context + noisy,
    }


def _table(info: dict) -> str:
    params = ",".join(f"{k}={v}" for k, v in info["params"].items())
    h, w = info["latent"]
    lines = [
        f"schedule {info['schedule']}{':' + params if params else ''} (tail {info['tail']}), "
        f"history {info['history']} frames, latent {h}x{w}, pad {info['pad']}",
        f"{'level':<10}{'kernel':<14}{'frames':>8}{'tokens':>10}",
    ]
    for lv in info["levels"]:
        name = lv["name"] if lv["role"] in ("level", "anchors") else f"{lv['name']} {lv['role']}"
        note = f"  ({lv['anchors']} anchor{'s' if lv['anchors'] != 1 else ''})" if lv["anchors"] else ""
        kernel = "(" + ",".join(map(str, lv["kernel"])) + ")"
        lines.append(f"{name:<10}{kernel:<14}{lv['frames']:>8}{lv['tokens']:>10}{note}")
    lines.append(f"{'context':<32}{info['context_tokens']:>10}")
    noisy = info["noisy"]
    kernel = "(" + ",".join(map(str, noisy["kernel"])) + ")"
    lines.append(f"{'noisy':<10}{kernel:<14}{noisy['frames']:>8}{noisy['tokens']:>10}")
    lines.append(f"{'total':<32}{info['total_tokens']:>10}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    info = budget(args)
    print(json.dumps(info, indent=2) if args.json else _table(info))
    return 0
