"""Where a demo model's error sits: per noise level, split into a latent's frame mean and the
frame-to-frame differences inside it, next to the floor of a D-wide linear output head.

The pixel codec stacks a latent's 4 frames in its channels, so a token (2x2 latent pixels) holds
4 x 8 x 8 x 3 = 768 values. A linear output head from a D-wide hidden state can only produce a
D-dimensional subspace of them; the best such subspace (PCA of true tokens) leaves a residual
that no amount of training removes. This script prints that floor for D = 128 and, for a model
(a bundle or a run directory's latest EMA weights), the clean-section estimate's error at each
noise level on held-out world windows (forward layout, true context), split into the part the
4 frames share and the part that differs between them (the motion inside a latent).

    python scripts/probe_floor.py runs/demo6/bundle
    python scripts/probe_floor.py runs/demo7            # a run directory: its latest EMA
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from eval_demo import forward_sections

from framepack.context import stack_contexts
from framepack.data.world_clips import WorldClips
from framepack.model_bundle import Bundle, load_bundle

SIGMAS = (0.95, 0.8, 0.6, 0.4, 0.2, 0.1, 0.03)


def load(path: Path) -> Bundle:
    """A bundle, or a run directory's initial bundle with its latest checkpoint's EMA weights."""
    if (path / "checkpoints").is_dir():
        from framepack.train.checkpoint import latest_checkpoint, load_checkpoint
        from framepack.train.components import Denoiser

        bundle = load_bundle(path / "model")
        model = Denoiser(bundle.transformer, bundle.text_encoder, bundle.meta.prediction)
        model.load_state_dict(load_checkpoint(latest_checkpoint(path / "checkpoints")).ema)
        return bundle
    return load_bundle(path)


def split(x: torch.Tensor, time_factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-codec latents (B, C, T, h, w) -> (the frames' mean, each frame's difference to it)."""
    b, c, t, h, w = x.shape
    frames = x.reshape(b, 3, time_factor, c // (3 * time_factor), t, h, w)
    mean = frames.mean(dim=2, keepdim=True)
    return mean, frames - mean


def linear_floor(width: int, clips: int = 64, seed: int = 0) -> tuple[float, float]:
    """Share of token energy outside the best `width`-dim subspace (PCA), and the share of
    energy in the within-latent frame differences, on training-world clips."""
    from framepack.codecs.pixel import PixelCodec

    data = WorldClips(33, 64, split="train", length=clips, seed=seed)
    lat = PixelCodec(4, 4).encode(torch.stack([data[i]["pixels"] for i in range(clips)]).float())[:, :, 1:]
    b, c, t, h, w = lat.shape
    tokens = lat.reshape(b, c, t, h // 2, 2, w // 2, 2).permute(0, 2, 3, 5, 1, 4, 6).reshape(-1, c * 4)
    tokens = tokens - tokens.mean(0)
    eig = torch.linalg.eigvalsh((tokens.T @ tokens / tokens.shape[0]).double()).flip(0)
    _, diff = split(lat, 4)
    return float(1 - eig[:width].sum() / eig.sum()), float((diff**2).sum() / ((lat - lat.mean()) ** 2).sum())


def probe(bundle: Bundle, clips: int, seed: int) -> list[dict]:
    contexts, x0, target_idx, captions = forward_sections(bundle, clips, seed)
    context, codec = stack_contexts(contexts), bundle.codec
    embeds = bundle.text_encoder.encode(captions)
    true_mean, true_diff = split(x0, codec.time_factor)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    rows = []
    with torch.no_grad():
        for sigma in SIGMAS:
            x = (1 - sigma) * x0 + sigma * noise
            t = torch.full((clips,), sigma * 1000.0)
            out = bundle.transformer(x, t, embeds.states, embeds.mask, embeds.pooled, target_idx, context)
            mean, diff = split(out, codec.time_factor)
            rows.append({
                "sigma": sigma,
                "error_mean": float(((mean - true_mean) ** 2).mean()),
                "error_diff": float(((diff - true_diff) ** 2).mean()),
                "diff_energy_true": float((true_diff**2).mean()),
                "diff_correlation": float((diff * true_diff).sum() / (diff.norm() * true_diff.norm() + 1e-12)),
            })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="a bundle or a run directory")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    bundle = load(args.model)
    if bundle.meta.prediction != "x0":
        raise SystemExit("probe_floor reads x0 estimates: give an x0-predicting demo model")
    floor, diff_share = linear_floor(128)
    print(
        f"linear head, D = 128: {floor:.4f} of token energy out of reach; frame differences hold {diff_share:.4f}"
    )
    print("sigma  error(mean)  error(diff)  diff corr")
    for r in probe(bundle, args.clips, args.seed):
        print(
            f"{r['sigma']:5.2f}  {r['error_mean']:11.4f}  {r['error_diff']:11.4f}  {r['diff_correlation']:9.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
