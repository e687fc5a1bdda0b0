"""Our forward vs diffusers' HunyuanVideoFramepackTransformer3DModel at equal weights and inputs.

4+4 blocks, width 256 (4 heads x 64), 16x16 latents, window 9, released inverted layout
(1x: 2 frames, 2x: 2, 4x: 16), batch 1, CPU float32. The two models alternate within each
repeat (the machine is shared and noisy), and we report the ratio of median times.

    python benchmarks/bench_forward.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import HunyuanVideoFramepackTransformer3DModel

from framepack.models import PackedTransformer, TransformerConfig
from framepack.packing import PackedContext, PackedLevel

KWARGS = dict(
    in_channels=16,
    out_channels=16,
    num_attention_heads=4,
    attention_head_dim=64,
    num_layers=4,
    num_single_layers=4,
    num_refiner_layers=2,
    text_embed_dim=256,
    pooled_projection_dim=64,
    rope_axes_dim=(16, 24, 24),
    has_image_proj=True,
    image_proj_dim=64,
    has_clean_x_embedder=True,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    reference = HunyuanVideoFramepackTransformer3DModel(**KWARGS).eval()
    ours = PackedTransformer(TransformerConfig(**KWARGS)).eval()
    ours.load_state_dict(reference.state_dict())

    window, size = 9, 16
    idx = torch.arange(1 + window + 1 + 2 + 16)
    start, noisy_idx, post, idx_2x, idx_4x = idx.split([1, window, 1, 2, 16])
    rand = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    x = rand(1, 16, window, size, size)
    clean, x2, x4 = rand(1, 16, 2, size, size), rand(1, 16, 2, size, size), rand(1, 16, 16, size, size)
    text, mask = rand(1, 64, 256), torch.ones(1, 64, dtype=torch.bool)
    mask[:, 40:] = False  # padded prompt, as a tokenizer returns it
    pooled, image = rand(1, 64), rand(1, 16, 64)
    t, guidance = torch.tensor([500.0]), torch.tensor([10000.0])
    clean_idx = torch.cat([start, post])

    def run_reference():
        return reference(
            x,
            t,
            text,
            mask,
            pooled,
            image,
            noisy_idx,
            guidance,
            clean,
            clean_idx,
            x2,
            idx_2x,
            x4,
            idx_4x,
            return_dict=False,
        )[0]

    context = PackedContext(
        (
            PackedLevel((4, 8, 8), x4, idx_4x[None]),
            PackedLevel((2, 4, 4), x2, idx_2x[None]),
            PackedLevel((1, 2, 2), clean, clean_idx[None]),
        )
    )

    def run_ours():
        return ours(
            x, t, text, mask, pooled, noisy_idx[None], context=context, image_embeds=image, guidance=guidance
        )

    times: dict[str, list[float]] = {"ours": [], "diffusers": []}
    with torch.inference_mode():
        rel = float((run_ours() - run_reference()).norm() / run_reference().norm())
        for _ in range(args.repeats):
            for name, fn in (("ours", run_ours), ("diffusers", run_reference)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"torch threads {torch.get_num_threads()}, repeats {args.repeats}, relative output difference {rel:.2e}"
    )
    print("| model | median forward (s) |")
    print("|---|---:|")
    for name, value in med.items():
        print(f"| {name} | {value:.3f} |")
    print(f"| ratio ours / diffusers | {med['ours'] / med['diffusers']:.3f} |")


if __name__ == "__main__":
    main()
