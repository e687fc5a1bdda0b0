"""CPU threads for one process: a default that holds up when the machine's cores are shared.

PyTorch starts one intra-op thread per core. On a machine whose cores other jobs also use,
that collapses (a 10-s demo video took 2-3 minutes with two threads while another job ran,
45 s with one), so the CLI starts with half the cores instead, at most 8, and one on a 2-core
machine; `OMP_NUM_THREADS` or `--threads` override it.
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


def use_threads(threads: int) -> None:
    """Run this process's torch CPU work on `threads` intra-op threads."""
    import torch

    torch.set_num_threads(threads)
