"""`framepack queue`: the web UI's job queue without a browser.

    framepack queue add --prompt "the camera pans right" --seconds 5   # same flags as generate
    framepack queue list
    framepack queue run              # run the waiting jobs, then exit (--watch: keep waiting)
    framepack queue run --device cuda:1 --watch   # one worker per GPU, several on one queue
    framepack queue move ID --by -1 / cancel ID / stop ID / retry ID

Jobs live in `<outputs>/queue/<id>.json` and write `<outputs>/<id>.mp4`; `framepack ui` on the
same `--outputs` shows and runs the same queue (one worker at a time; the other waits), unless
the workers are given devices: then each device has one worker and each job is claimed by one.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from framepack.errors import UserError

ACTIONS = ("add", "list", "run", "move", "cancel", "stop", "retry")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from framepack.cli import generate

    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="queue a job (the flags of `framepack generate`)")
    generate.add_arguments(add)
    add.add_argument("--front", action="store_true", help="put the job first in the queue")
    sub.add_parser("list", help="list the jobs in queue order").add_argument(
        "--json", action="store_true", help="one JSON object per job"
    )
    run = sub.add_parser("run", help="run the waiting jobs one at a time")
    run.add_argument("--watch", action="store_true", help="keep waiting for new jobs (Ctrl-C to end)")
    run.add_argument("--threads", type=int, help="CPU threads (default: as framepack generate)")
    run.add_argument("--quiet", action="store_true", help="no progress (bars on a terminal, else lines)")
    run.add_argument(
        "--device",
        help="run the jobs on this device (cuda:1 ...), beside workers on other devices of the same "
        "queue (default: the queue's one worker, each job on its own --device)",
    )
    move = sub.add_parser("move", help="move a waiting job earlier (--by -1) or later (--by 1)")
    move.add_argument("id")
    move.add_argument("--by", type=int, required=True, help="places to move (negative: earlier)")
    for name, text in (
        ("cancel", "cancel a waiting job, or end a running one after its current step"),
        ("stop", "stop a running job after its current step (retry resumes it)"),
        ("retry", "queue a stopped, failed or cancelled job again (it resumes what it saved)"),
    ):
        sub.add_parser(name, help=text).add_argument("id")
    for parser in sub.choices.values():
        parser.add_argument("--outputs", default="outputs", help="outputs folder holding the queue")


def run(args: argparse.Namespace) -> int:
    from framepack.queue import JobQueue

    queue = JobQueue(args.outputs)
    if args.action == "add":
        return _add(queue, args)
    if args.action == "list":
        return _list(queue, as_json=args.json)
    if args.action == "run":
        return _run(queue, watch=args.watch, threads=args.threads, device=args.device, quiet=args.quiet)
    queue.get(args.id)  # an unknown id is refused before the queue folder is touched
    job = queue.move(args.id, args.by) if args.action == "move" else getattr(queue, args.action)(args.id)
    print(f"{job.id}: {job.status}{' (stopping after this step)' if job.stop_requested else ''}")
    return 0


def _add(queue: Any, args: argparse.Namespace) -> int:
    from framepack.cli.generate import load_options_from_args, options_from_args

    if args.threads is not None:
        raise UserError("--threads: give it to `framepack queue run`, which runs the job")
    if args.parallel is not None:
        raise UserError(
            "--parallel: the queue runs one job per worker; for one job on several GPUs use "
            "`torchrun ... -m framepack generate --parallel N`, for many jobs one `queue run --device` per GPU"
        )
    load = load_options_from_args(args)
    job = queue.add(options_from_args(args), model=args.model or "demo", load=load, front=args.front)
    print(f"{job.id}: queued -> {queue.video(job)}")
    return 0


def _list(queue: Any, *, as_json: bool) -> int:

    jobs, broken = queue.scan()
    for job in jobs:
        if as_json:
            print(json.dumps(job.to_json(), ensure_ascii=False))
            continue
        fraction = job.progress.get("fraction", 0)
        fraction = fraction if isinstance(fraction, int | float) else 0
        done = f"{100 * fraction:3.0f}%" if job.status == "running" else ""
        note = " ".join((job.error or (str(queue.video(job)) if job.status == "done" else "")).split())
        print(f"{job.id}  {job.status:9s} {done:4s}  {_summary(job)}  {note}".rstrip())
    for bad in broken:  # never run; named so they can be fixed or removed
        if as_json:
            print(json.dumps({"file": bad.file, "status": "broken", "error": bad.reason}, ensure_ascii=False))
        else:
            print(f"{bad.file}  broken: {bad.reason}")
    return 0


def _run(queue: Any, *, watch: bool, threads: int | None, device: str | None, quiet: bool = False) -> int:
    from framepack.options import LoadOptions
    from framepack.queue import Worker
    from framepack.runtime import check_threads, use_threads

    if device is not None:  # one line if it is not here; "cuda" and "cuda:0" are one device
        target = LoadOptions(device=device).torch_device()
        device = f"{target.type}:{target.index or 0}" if target.type == "cuda" else target.type
    use_threads(check_threads(threads))
    worker = Worker(queue, on_start=_starting, on_end=_report, device=device, progress=not quiet)

    def shutdown(signum: int, frame: Any) -> None:
        if worker.shutdown.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        print("framepack queue: stopping after the current step (the job resumes next time)", file=sys.stderr)
        worker.shutdown.set()

    previous = {s: signal.signal(s, shutdown) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        count = worker.run(until_empty=not watch)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(f"framepack queue: {count} job{'s' * (count != 1)} run")
    return 130 if worker.shutdown.is_set() else 0


def _starting(job: Any) -> None:
    print(f"{job.id}: running ({_summary(job)})", flush=True)


def _summary(job: Any) -> str:
    """`5s seed 31337  the camera pans right` (the prompt cut to 40 characters, on one line)."""
    lines = (job.prompt or "(the model's prompt)").splitlines()  # a page's timeline: one per line
    prompt = "; ".join(" ".join(line.split()) for line in lines if line.strip())
    prompt = prompt if len(prompt) <= 40 else prompt[:39] + "…"
    from framepack.options import GenerationOptions

    seconds = job.options.get("seconds", GenerationOptions.seconds)  # a job file of defaults: {}
    seed = job.options.get("seed", GenerationOptions.seed)
    return f"{seconds:g}s seed {seed}  {prompt}"


def _report(job: Any) -> None:
    detail = f"{job.frames} frames" if job.status == "done" else job.error or ""
    print(f"{job.id}: {job.status}{f' ({detail})' if detail else ''}", flush=True)
