"""CPU threads for one process: a default that holds up when the machine's cores are shared.

PyTorch starts one intra-op thread per core. On a machine whose cores other jobs also use,
that collapses (`python benchmarks/bench_generate.py --mode threads`, docs/generation.md: on the
2-core machine under load, two threads were several times slower than one), so every entry point
starts with half the cores instead, at most 8, and one on a 2-core machine: the CLI, `framepack
queue run` and `framepack ui` (`--threads` overrides it) and the Python API
(`FramePackPipeline.from_pretrained(..., threads=N)` overrides it); `OMP_NUM_THREADS` sets it
for all of them. The API applies the default only if no entry point chose a number before
(`ensure_threads`), so a worker's `--threads` holds for the pipelines it loads.
"""

from __future__ import annotations

import os

from framepack.errors import UserError


def default_threads() -> int:
    """`OMP_NUM_THREADS` when set, else half the usable cores (1 to 8)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores // 2))


def check_threads(threads: int | None, flag: str = "--threads") -> int:
    """`threads`, or the default when None; refuses numbers outside 1..256 with one line."""
    if threads is None:
        return default_threads()
    if not 1 <= threads <= 256:
        raise UserError(f"{flag} must be between 1 and 256, got {threads}")
    return threads


_chosen: list[int] = []  # the number this process runs on, once an entry point chose it


def use_threads(threads: int) -> None:
    """Run this process's torch CPU work on `threads` intra-op threads."""
    import torch

    torch.set_num_threads(threads)
    _chosen[:] = [threads]


def ensure_threads(threads: int | None = None) -> int:
    """`threads` if given (checked), else the number already chosen in this process, else the
    default (`default_threads`); applied (`use_threads`) and returned."""
    if threads is None and _chosen:
        return _chosen[0]
    threads = check_threads(threads, "threads=")
    use_threads(threads)
    return threads
