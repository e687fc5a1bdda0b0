"""Generation speed with a model bundle (default: the bundled demo model).

Two measurements (docs/generation.md records the results):

1. `--mode flat`: seconds per section against section index over long videos (e.g. 60 s and
   600 s). FramePack's context is bounded, so the time per section must stay flat.
2. `--mode budget`: wall time of a whole job (default 10 s at 30 fps), median of `--repeats`
   runs, split into transformer, codec (encode + decode) and writing (MP4 + resume data).

    python benchmarks/bench_generate.py --mode budget --seconds 10 --repeats 3
    python benchmarks/bench_generate.py --mode flat --seconds 60 600

3. `--mode threads`: wall time of a whole job on 1 and on 2 torch threads, interleaved
   (1, 2, 1, 2, ...) so a changing load hits both alike; `--burn N` adds N busy processes for
   the measurement (a loaded machine); the load average is recorded with each run.
4. `--mode entry`: the README's two ways in, each a fresh process without `OMP_NUM_THREADS`:
   `framepack generate` and the README's Python API example, interleaved; prints API / CLI.

    python benchmarks/bench_generate.py --mode threads --seconds 2 --repeats 2 [--burn 2]
    python benchmarks/bench_generate.py --mode entry --seconds 2 --repeats 2

Time is measured by wrapping the transformer, the codec and the writers; the pipeline itself
is not changed for the benchmark.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import framepack.resume as resume_module
import framepack.writer as writer_module
from framepack.components import LoadOptions
from framepack.options import GenerationOptions
from framepack.pipeline import FramePackPipeline


class Timer:
    """Accumulates wall time per named part."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total[name] = self.total.get(name, 0.0) + time.perf_counter() - start

        return timed


class TimedCodec:
    """A codec wrapper that times encode and decode (codecs may be frozen dataclasses)."""

    def __init__(self, codec, timer: Timer) -> None:
        self._codec = codec
        self.encode = timer.wrap("codec", codec.encode)
        self.decode = timer.wrap("codec", codec.decode)

    def __getattr__(self, name):
        return getattr(self._codec, name)


def instrument(pipe: FramePackPipeline, timer: Timer) -> None:
    c = pipe.components
    c.transformer.forward = timer.wrap("transformer", c.transformer.forward)
    c.codec = TimedCodec(c.codec, timer)
    writer_module.write_video = timer.wrap("write video", writer_module.write_video)
    writer_module.write_sidecar = timer.wrap("write video", writer_module.write_sidecar)
    resume_module.save_state = timer.wrap("save resume data", resume_module.save_state)
    resume_module.save_part = timer.wrap("save resume data", resume_module.save_part)


def run_job(
    pipe: FramePackPipeline, seconds: float, out: Path, plan: str | None, timer: Timer
) -> tuple[float, list[float], list[float]]:
    """One job: its wall time, and per section (in plan order) the wall time and the model time."""
    marks: list[tuple[float, float]] = []  # (wall clock, cumulative transformer time) at section starts
    last = {"section": None}

    def on_step(info):  # framepack.pipeline.StepInfo
        if last["section"] != info.section.step:
            last["section"] = info.section.step
            marks.append((time.perf_counter(), timer.total.get("transformer", 0.0)))

    options = GenerationOptions(seconds=seconds, out=str(out), overwrite=True, plan=plan)
    start = time.perf_counter()
    pipe.generate(options, progress=False, callback=on_step)
    end = time.perf_counter()
    marks.append((end, timer.total.get("transformer", 0.0)))
    wall = [b[0] - a[0] for a, b in itertools.pairwise(marks)]
    model = [b[1] - a[1] for a, b in itertools.pairwise(marks)]
    return end - start, wall, model


def burn() -> None:
    """A busy process (the load of `--burn`)."""
    while True:
        pass


def threads_mode(pipe: FramePackPipeline, args: argparse.Namespace, out: Path) -> dict:
    """Whole jobs on 1 and 2 threads, interleaved; per thread count the wall times and load."""
    burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.burn)]
    for b in burners:
        b.start()
    rows: dict[int, list] = {1: [], 2: []}
    try:
        for _ in range(args.repeats):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                load = os.getloadavg()[0]
                wall, _, _ = run_job(pipe, args.seconds[0], out, args.plan, Timer())
                rows[threads].append({"wall_s": round(wall, 2), "load_1min": round(load, 2)})
                print(f"{threads} thread(s): {wall:.1f} s (load average {load:.2f})", flush=True)
    finally:
        for b in burners:
            b.terminate()
    medians = {t: statistics.median(r["wall_s"] for r in rows[t]) for t in rows}
    print(
        f"median 1 thread {medians[1]:.1f} s, 2 threads {medians[2]:.1f} s: 2/1 = {medians[2] / medians[1]:.2f}"
    )
    return {"cores": os.cpu_count(), "burn": args.burn, "runs": rows, "two_over_one": medians[2] / medians[1]}


API_EXAMPLE = """
from framepack.pipeline import FramePackPipeline
from framepack.options import GenerationOptions

pipe = FramePackPipeline.from_pretrained("demo")
pipe.generate(GenerationOptions(seconds={seconds}, out={out!r}, overwrite=True), progress=False)
"""


def entry_mode(args: argparse.Namespace, tmp: Path) -> dict:
    """The CLI and the README's API example as fresh processes (no OMP_NUM_THREADS), interleaved."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    seconds = args.seconds[0]
    commands = {
        "cli": [sys.executable, "-m", "framepack", "generate", "--seconds", f"{seconds:g}", "--quiet",
                "--overwrite", "--out", str(tmp / "cli.mp4")],
        "api": [sys.executable, "-c", API_EXAMPLE.format(seconds=seconds, out=str(tmp / "api.mp4"))],
    }  # fmt: skip
    walls: dict[str, list[float]] = {"cli": [], "api": []}
    for _ in range(args.repeats):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
            walls[name].append(round(time.perf_counter() - start, 2))
            print(f"{name}: {walls[name][-1]:.1f} s (load average {os.getloadavg()[0]:.2f})", flush=True)
    ratio = statistics.median(walls["api"]) / statistics.median(walls["cli"])
    print(f"API / CLI wall time (medians): {ratio:.2f}")
    return {"cores": os.cpu_count(), "walls_s": walls, "api_over_cli": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--mode", choices=["flat", "budget", "threads", "entry"], default="budget")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plan", default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--burn", type=int, default=0, help="--mode threads: busy processes beside it")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    if args.mode == "entry":
        with tempfile.TemporaryDirectory() as tmp:
            results = entry_mode(args, Path(tmp))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe = FramePackPipeline.from_pretrained(args.model, LoadOptions(device="cpu"))
    timer = Timer()
    instrument(pipe, timer)
    results: dict = {"model": args.model, "mode": args.mode, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.mp4"
        if args.mode == "threads":
            results.update(threads_mode(pipe, args, out))
        elif args.mode == "budget":
            for seconds in args.seconds:
                walls, parts = [], []
                for _ in range(args.repeats):
                    timer.total.clear()
                    wall, _, _ = run_job(pipe, seconds, out, args.plan, timer)
                    walls.append(wall)
                    parts.append(dict(timer.total))
                median = statistics.median(walls)
                i = walls.index(median)
                split = {k: round(v, 2) for k, v in parts[i].items()}
                split["other"] = round(median - sum(parts[i].values()), 2)
                results[f"{seconds:g}s"] = {
                    "wall_s": [round(w, 2) for w in walls],
                    "median_s": round(median, 2),
                }
                results[f"{seconds:g}s"]["split_of_median_s"] = split
                print(
                    f"{seconds:g} s video: median {median:.2f} s over {args.repeats} runs {walls}; split {split}"
                )
        else:
            for seconds in args.seconds:
                timer.total.clear()
                wall, per_section, model = run_job(pipe, seconds, out, args.plan, timer)
                n = len(per_section)
                quart = max(1, n // 4)
                row = {"sections": n, "wall_s": round(wall, 2)}
                for name, values in (("section", per_section), ("model", model)):
                    first, last = statistics.median(values[:quart]), statistics.median(values[-quart:])
                    row[f"{name}_median_first_quarter_s"] = round(first, 4)
                    row[f"{name}_median_last_quarter_s"] = round(last, 4)
                    row[f"{name}_last_over_first"] = round(last / first, 3)
                row["per_section_s"] = [round(v, 4) for v in per_section]
                row["split_s"] = {k: round(v, 2) for k, v in timer.total.items()}
                results[f"{seconds:g}s"] = row
                print(
                    f"{seconds:g} s video: {n} sections in {wall:.1f} s; s/section (median) first quarter "
                    f"{row['section_median_first_quarter_s']}, last {row['section_median_last_quarter_s']} "
                    f"(x{row['section_last_over_first']}); model s/section first "
                    f"{row['model_median_first_quarter_s']}, last {row['model_median_last_quarter_s']} "
                    f"(x{row['model_last_over_first']}); split {row['split_s']}"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
