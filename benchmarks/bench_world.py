"""Render speed of the procedural world on one CPU core.

    python benchmarks/bench_world.py [--size 64] [--seconds 20] [--repeats 3]

Reports frames per second for: a fresh clip (new world, tiles computed as the camera discovers
them), the same clip again (all tiles cached), the map computed from scratch for every frame
(no tile cache), and WorldClips training items (33 frames each, a new world per item).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from framepack.data.world import World, render_clip
from framepack.data.world_clips import WorldClips
from framepack.data.world_script import random_script


def best_rate(fn, count: int, repeats: int) -> float:
    """Best of `repeats` timings of fn(), as `count` units per second."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    script = random_script(0, args.seconds, args.fps)
    frames = round(args.seconds * args.fps)

    fresh = best_rate(lambda: render_clip(World(0), script, args.size, args.fps), frames, args.repeats)
    world = World(0)
    render_clip(world, script, args.size, args.fps)  # fills the tile cache
    cached = best_rate(lambda: render_clip(world, script, args.size, args.fps), frames, args.repeats)

    uncached_world = World(0)
    xs, ys = np.arange(args.size), np.arange(args.size)

    def uncached() -> None:
        for f in range(frames):
            uncached_world.map_indices(xs + 2 * f, ys)

    uncached_rate = best_rate(uncached, frames, args.repeats)
    clips = WorldClips(33, args.size, args.fps, length=64)
    items = best_rate(lambda: [clips[i] for i in range(16)], 16, args.repeats)

    print(f"size {args.size}x{args.size}, {frames} frames, torch threads 1 (pin one core with taskset -c 0)")
    print(f"fresh world, clip with tile discovery : {fresh:8.0f} frames/s")
    print(f"cached tiles (same clip again)        : {cached:8.0f} frames/s")
    print(f"map from scratch every frame (no cache): {uncached_rate:8.0f} frames/s")
    print(f"WorldClips items (33 frames, new world): {items:8.1f} items/s = {33 * items:.0f} frames/s")


if __name__ == "__main__":
    main()
