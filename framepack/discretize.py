"""History discretization (SPEC.md sec. 4, the paper's second anti-drifting method): a K-means
codebook of latent vectors, and history latents replaced by their nearest codebook entry.

Clean history seen in training differs from generated history seen at inference; feeding the
model the centroid nearest to each history latent vector, in training and at inference alike,
shrinks that gap. A *latent vector* is the (C,) channel vector at one latent pixel: latents
(B, C, T, h, w) hold B*T*h*w of them, each quantized on its own.

`fit_codebook` runs K-means (greedy k-means++ seeding, then Lloyd iterations, in torch) with an
explicit seed; docs/training.md ("History discretization") compares it with scikit-learn's
KMeans on the same demo-world sample. The codebook is stored in safetensors beside the model
(`framepack.model_bundle`, `history_codebook.safetensors`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

CHUNK = 8192  # vectors per distance block (memory: CHUNK x K floats)


@dataclass(frozen=True)
class Codebook:
    """K latent vectors; calling it quantizes latents to their nearest entry (L2).

    centroids: (K, C) float32.
    """

    centroids: Tensor

    def __post_init__(self) -> None:
        c = self.centroids
        if c.ndim != 2 or c.shape[0] < 2 or not c.is_floating_point():
            raise ValueError(f"a codebook is a float (K >= 2, C) tensor, got {tuple(c.shape)} {c.dtype}")
        if not torch.isfinite(c).all():
            raise ValueError("codebook entries must be finite")
        object.__setattr__(self, "centroids", c.detach().float().cpu().contiguous())

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    @property
    def channels(self) -> int:
        return self.centroids.shape[1]

    def indices(self, latents: Tensor) -> Tensor:
        """latents (B, C, T, h, w) -> (B, T, h, w) int64: the nearest entry of each latent vector."""
        if latents.ndim != 5 or latents.shape[1] != self.channels:
            raise ValueError(
                f"latents must be (B, {self.channels}, T, h, w) for this codebook, got {tuple(latents.shape)}"
            )
        vectors = latent_vectors(latents)  # (N, C)
        index = nearest(vectors, self.centroids.to(latents.device))  # (N,)
        b, _, t, h, w = latents.shape
        return index.reshape(b, t, h, w)

    def lookup(self, indices: Tensor) -> Tensor:
        """indices (B, T, h, w) int64 -> latents (B, C, T, h, w) float32 (the centroids)."""
        return self.centroids.to(indices.device)[indices].movedim(-1, 1)

    def __call__(self, latents: Tensor) -> Tensor:
        """Quantize latents (B, C, T, h, w) to their nearest entries; same shape and dtype."""
        return self.lookup(self.indices(latents)).to(latents.dtype)

    def save(self, path: str | os.PathLike) -> None:
        save_file({"centroids": self.centroids}, str(path), metadata={"k": str(self.k)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Codebook:
        """Read a codebook written by `save` (ValueError when it is not one)."""
        tensors = load_file(str(Path(path)))
        if set(tensors) != {"centroids"}:
            raise ValueError(f"expected one tensor 'centroids', found {sorted(tensors)}")
        return cls(tensors["centroids"])


def latent_vectors(latents: Tensor) -> Tensor:
    """latents (B, C, T, h, w) -> (B*T*h*w, C) float32: the channel vector of every latent pixel."""
    return latents.detach().float().movedim(1, -1).reshape(-1, latents.shape[1])


def nearest(vectors: Tensor, centroids: Tensor) -> Tensor:
    """vectors (N, C), centroids (K, C) -> (N,) int64: argmin of the squared L2 distance."""
    index, _ = _assign(vectors.float(), centroids.float())
    return index


def _assign(x: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest center and squared distance of each row of x (N, C), in blocks of CHUNK rows."""
    norms = (centers * centers).sum(1)  # (K,)
    index, dist = [], []
    for block in x.split(CHUNK):
        d = norms - 2.0 * block @ centers.T  # (n, K): |c|^2 - 2 x.c, |x|^2 added after the argmin
        best, arg = d.min(1)
        index.append(arg)
        dist.append((best + (block * block).sum(1)).clamp_min(0.0))
    return torch.cat(index), torch.cat(dist)


@dataclass(frozen=True)
class KMeansResult:
    """A fitted codebook, its inertia (sum of squared distances of the sample to their nearest
    entry) and the Lloyd iterations run."""

    codebook: Codebook
    inertia: float
    iterations: int


def fit_codebook(
    vectors: Tensor, k: int, *, seed: int, max_iter: int = 100, tol: float = 1e-4
) -> KMeansResult:
    """K-means over `vectors` (N, C): greedy k-means++ seeding (2 + ln K candidates per entry,
    as scikit-learn), then Lloyd iterations until the centers move less than `tol` times the
    sample's mean per-channel variance (squared, summed) or `max_iter`. An empty cluster takes
    the vector farthest from its center. Deterministic for a seed (a private torch.Generator).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"K must be an integer >= 2, got {k!r}")
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"vectors must be a non-empty (N, C) tensor, got {tuple(vectors.shape)}")
    n = vectors.shape[0]
    if k > n:
        raise ValueError(f"K = {k} is more than the {n} latent vectors sampled; use K <= {n}")
    x = vectors.detach().float().contiguous()
    gen = torch.Generator().manual_seed(seed)
    centers = _kmeans_pp(x, k, gen)
    threshold = tol * float(x.var(0, unbiased=False).mean())
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (the count is reported)
        index, dist = _assign(x, centers)
        new = torch.zeros_like(centers).index_add_(0, index, x)
        counts = torch.bincount(index, minlength=k)
        empty = (counts == 0).nonzero().flatten()
        new[counts > 0] /= counts[counts > 0, None].to(x.dtype)
        if len(empty):  # reseed empty clusters with the farthest vectors
            far = dist.topk(len(empty)).indices
            new[empty] = x[far]
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if shift <= threshold and not len(empty):
            break
    _, dist = _assign(x, centers)
    return KMeansResult(Codebook(centers), float(dist.double().sum()), iterations)


def _kmeans_pp(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """Greedy k-means++ (Arthur & Vassilvitskii 2007; scikit-learn's variant): each new center is
    the best of 2 + ln K candidates drawn with probability proportional to squared distance."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    first = int(torch.randint(n, (1,), generator=gen))
    centers = [x[first]]
    closest = ((x - x[first]) ** 2).sum(1)  # (N,)
    for _ in range(1, k):
        total = float(closest.sum())
        if total <= 0:
            raise ValueError(f"the sample holds fewer than K = {k} distinct latent vectors; use a smaller K")
        candidates = torch.multinomial(closest, trials, replacement=True, generator=gen)  # (trials,)
        d = torch.cdist(x[candidates], x).pow(2)  # (trials, N)
        pot = torch.minimum(closest, d)  # (trials, N)
        best = int(pot.sum(1).argmin())
        closest = pot[best]
        centers.append(x[candidates[best]])
    return torch.stack(centers)
