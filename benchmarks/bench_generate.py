"""Generation speed with a model bundle (default: the bundled demo model).

Two measurements (docs/generation.md records the results):

1. `--mode flat`: seconds per section against section index over long videos (e.g. 60 s and
   600 s). FramePack's context is bounded, so the time per section must stay flat.
2. `--mode budget`: wall time of a whole job (default 10 s at 30 fps), median of `--repeats`
   runs, split into transformer, codec (encode + decode) and writing (MP4 + resume data).

    python benchmarks/bench_generate.py --mode budget --seconds 10 --repeats 3
    python benchmarks/bench_generate.py --mode flat --seconds 60 600

Time is measured by wrapping the transformer, the codec and the writers; the pipeline itself
is not changed for the benchmark.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--mode", choices=["flat", "budget"], default="budget")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plan", default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe = FramePackPipeline.from_pretrained(args.model, LoadOptions(device="cpu"))
    timer = Timer()
    instrument(pipe, timer)
    results: dict = {"model": args.model, "mode": args.mode, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.mp4"
        if args.mode == "budget":
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
