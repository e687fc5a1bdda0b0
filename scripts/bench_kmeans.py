"""The history codebook's K-means (framepack.discretize.fit_codebook) against scikit-learn's
KMeans on the same sample of demo-world latents: inertia per vector and seconds, one thread.

The sample is the one `framepack train --preset demo --discretize-history K` fits on
(framepack.train.data.history_sample: 32 training windows, at most 65,536 history latent
vectors, the demo codec). scikit-learn is not a dependency; install it anywhere on PYTHONPATH
to compare (`pip install --target /tmp/skl scikit-learn`).

    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/skl python scripts/bench_kmeans.py --k 128 256 --seeds 0 1
"""

from __future__ import annotations

import argparse
import time

import torch

from framepack.discretize import fit_codebook
from framepack.model_bundle import demo_path, load_bundle
from framepack.train.config import PRESETS
from framepack.train.data import history_sample, make_source


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--k", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--clips", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = PRESETS["demo"]
    codec = load_bundle(demo_path()).codec
    t0 = time.perf_counter()
    x = history_sample(config, make_source(config, codec), codec, clips=args.clips)
    took = time.perf_counter() - t0
    spread = float(((x - x.mean(0)) ** 2).sum(1).mean())  # inertia per vector of one centroid
    print(f"sample: {tuple(x.shape)} latent vectors in {took:.1f} s; K=1 inertia/vector {spread:.5f}")
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        KMeans = None
        print("scikit-learn not importable: torch only")
    n = len(x)
    for k in args.k:
        for seed in args.seeds:
            t0 = time.perf_counter()
            fit = fit_codebook(x, k, seed=seed)
            took = time.perf_counter() - t0
            print(f"K={k} seed={seed} torch:   inertia/vector {fit.inertia / n:.5f}  "
                  f"{took:6.1f} s  ({fit.iterations} iterations)")  # fmt: skip
            if KMeans is not None:
                t0 = time.perf_counter()
                km = KMeans(k, init="k-means++", n_init=1, max_iter=100, tol=1e-4, random_state=seed).fit(
                    x.numpy()
                )
                took = time.perf_counter() - t0
                print(f"K={k} seed={seed} sklearn: inertia/vector {km.inertia_ / n:.5f}  "
                      f"{took:6.1f} s  ({km.n_iter_} iterations)")  # fmt: skip


if __name__ == "__main__":
    main()
