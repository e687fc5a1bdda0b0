"""One denoising forward of one section vs history length: packed (FramePack) vs full context.

Each measurement runs in a fresh subprocess: time is the median of `--repeats` forwards (after
one warm-up), memory is the peak RSS growth of pack + forward over the process before packing
(history storage itself excluded). Packed layouts use framepack.packing: the released layout and
a geometric schedule (lambda 2, depth 4: kernels 1x..8x); "full" puts all history at 1x.

    python benchmarks/bench_context.py [--frames 10 100 1000 10000] [--full-cap 100]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from framepack import packing
from framepack.models import PackedTransformer, TransformerConfig

CONFIG = TransformerConfig(
    in_channels=16,
    out_channels=16,
    num_attention_heads=4,
    attention_head_dim=64,
    num_layers=2,
    num_single_layers=2,
    num_refiner_layers=1,
    text_embed_dim=64,
    pooled_projection_dim=32,
    rope_axes_dim=(16, 24, 24),
    image_proj_dim=32,
)
WINDOW, SIZE = 9, 16  # latent frames per section, latent height = width


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(layout: str, frames: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    model = PackedTransformer(CONFIG).eval()
    if layout == "geometric":
        model.add_clean_level((8, 16, 16))
        schedule = packing.geometric(lam=2.0, depth=4)
    else:
        schedule = packing.released()
    history = torch.randn(1, 16, frames, SIZE, SIZE, generator=g)
    history_idx = torch.arange(1, frames + 1)[None]
    target_idx = torch.arange(frames + 1, frames + 1 + WINDOW)[None]
    start, start_idx = history[:, :, :1].clone(), torch.zeros(1, 1, dtype=torch.int64)
    noisy = torch.randn(1, 16, WINDOW, SIZE, SIZE, generator=g)
    text = torch.randn(1, 16, CONFIG.text_embed_dim, generator=g)
    cond = dict(
        timestep=torch.tensor([500.0]),
        text_states=text,
        text_mask=torch.ones(1, 16, dtype=torch.bool),
        pooled_text=torch.randn(1, CONFIG.pooled_projection_dim, generator=g),
        image_embeds=torch.randn(1, 4, CONFIG.image_proj_dim, generator=g),
        guidance=torch.tensor([10000.0]),
    )

    def step() -> None:
        if layout == "full":
            level = packing.PackedLevel(
                (1, 2, 2), torch.cat([start, history], 2), torch.cat([start_idx, history_idx], 1)
            )
            context = packing.PackedContext((level,))
        else:
            context = packing.pack(
                history, history_idx, target_idx, schedule, anchors=start, anchor_indices=start_idx
            )
        model(noisy, latent_indices=target_idx, context=context, **cond)

    with torch.inference_mode():
        before = _rss_bytes()
        step()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        tokens = (
            model.embed_video(
                noisy,
                target_idx,
                packing.pack(
                    history, history_idx, target_idx, schedule, anchors=start, anchor_indices=start_idx
                ),
            )[0].shape[1]
            if layout != "full"
            else (frames + 1 + WINDOW) * (SIZE // 2) ** 2
        )
    return {"seconds": statistics.median(times), "peak_mib": max(peak - before, 0) / 2**20, "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--full-cap", type=int, default=100, help="largest history run with the full context")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("LAYOUT", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.repeats)))
        return
    torch_threads = torch.get_num_threads()
    print(
        f"width {CONFIG.inner_dim}, {CONFIG.num_layers}+{CONFIG.num_single_layers} blocks, latents {SIZE}x{SIZE}, "
        f"window {WINDOW}, torch threads {torch_threads}, CPU float32"
    )
    print("| history frames | layout | video tokens | forward (s) | peak RSS growth (MiB) |")
    print("|---:|---|---:|---:|---:|")
    for frames in args.frames:
        for layout in ("released", "geometric", "full"):
            if layout == "full" and frames > args.full_cap:
                print(
                    f"| {frames} | full | {(frames + 1 + WINDOW) * (SIZE // 2) ** 2} | skipped (> --full-cap) | - |"
                )
                continue
            cmd = [sys.executable, __file__, "--child", layout, str(frames), "--repeats", str(args.repeats)]
            result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            print(
                f"| {frames} | {layout} | {result['tokens']} | {result['seconds']:.3f} | {result['peak_mib']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
