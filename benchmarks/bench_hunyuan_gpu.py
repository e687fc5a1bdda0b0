"""Speed and memory of the released-size transformer: seconds per section and per frame, peak VRAM.

Builds a PackedTransformer with random weights (the released architecture, no download), runs
the sampler's transformer calls of whole sections at a bucket and window (released: 640 bucket,
window 9, 25 steps, the released context layout [4x 16 | 2x 2 | 1x 2]) in normal and low-VRAM
(block streaming) modes, with and without TeaCache. Random weights time the compute exactly,
but TeaCache's skip count depends on how the real model's inputs change: with random weights it
is only indicative.

Several GPUs (sequence parallel, `framepack.models.parallel`): under torchrun with `--parallel N`,
every process builds the same weights and runs the same sections on cuda:LOCAL_RANK, each
attention split over the N processes (TeaCache off: it does not run with --parallel); process 0
prints and writes the results, with the largest peak VRAM of the N processes.

GPU:        python benchmarks/bench_hunyuan_gpu.py --out bench.json
GPUs:       torchrun --nproc_per_node 4 benchmarks/bench_hunyuan_gpu.py --parallel 4 --teacache off --out bench4.json
CPU smoke:  python benchmarks/bench_hunyuan_gpu.py --preset tiny --device cpu --bucket 128 --steps 3 --sections 1
CPU smoke of the parallel mode (gloo):
            torchrun --nproc_per_node 2 benchmarks/bench_hunyuan_gpu.py --preset tiny --device cpu \
                --bucket 128 --steps 3 --sections 1 --teacache off --parallel 2
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from framepack.hunyuan.buckets import nearest_bucket
from framepack.hunyuan.memory import estimate_vram, released_history_tokens, stream_blocks
from framepack.hunyuan.teacache import DEFAULT_THRESHOLD, TeaCache, install_teacache
from framepack.models import PRESETS, PackedTransformer
from framepack.packing import PackedContext, PackedLevel


def build(preset: str, device: torch.device, dtype: torch.dtype, seed: int) -> PackedTransformer:
    """Random weights (normal, std 0.02; zero biases) built directly in `dtype` on `device`."""
    with torch.device("meta"):
        model = PackedTransformer(PRESETS[preset])
    model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)  # norm scales
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return model.to(dtype).eval().requires_grad_(False)


def section_inputs(model: PackedTransformer, latent_hw: tuple[int, int], window: int, device, dtype, gen):
    """Noisy latents and the released inverted context ([4x 16 | 2x 2 | 1x start+post])."""
    cfg = model.config
    c, (h, w) = cfg.in_channels, latent_hw

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device=device, dtype=torch.float32)

    pad = 1  # one blank window: indices [start | blank 9 | noisy 9 | post | 2x 2 | 4x 16]
    start, noisy0 = 0, 1 + pad * window
    post = noisy0 + window
    context = PackedContext(
        (
            PackedLevel(
                (4, 8, 8),
                randn(1, c, 16, h, w).to(dtype),
                torch.arange(post + 3, post + 19, device=device)[None],
            ),
            PackedLevel(
                (2, 4, 4),
                randn(1, c, 2, h, w).to(dtype),
                torch.arange(post + 1, post + 3, device=device)[None],
            ),
            PackedLevel(
                (1, 2, 2), randn(1, c, 2, h, w).to(dtype), torch.tensor([[start, post]], device=device)
            ),
        )
    )
    text = randn(1, 256, cfg.text_embed_dim).to(dtype)
    pooled = randn(1, cfg.pooled_projection_dim).to(dtype)
    image = randn(1, 729, cfg.image_proj_dim).to(dtype)
    indices = torch.arange(noisy0, noisy0 + window, device=device)[None]
    return randn(1, c, window, h, w), context, text, pooled, image, indices


@torch.no_grad()
def run_section(model, inputs, steps: int, dtype, device, cache: TeaCache | None) -> None:
    """One section: `steps` Euler steps of the flow-matching sampler (guidance 10, as released)."""
    x, context, text, pooled, image, indices = inputs
    mask = torch.ones(text.shape[:2], dtype=torch.bool, device=device)
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    if cache is not None:
        cache.reset()
    for i in range(steps):
        t = torch.full((1,), float(sigmas[i]) * 1000, device=device)
        v = model(
            x.to(dtype),
            t,
            text,
            mask,
            pooled,
            indices,
            context,
            image,
            torch.full((1,), 10000.0, device=device),
        )
        x = x + (sigmas[i + 1] - sigmas[i]) * v.float()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(args, mode: str, teacache: bool) -> dict:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    bh, bw = nearest_bucket(args.bucket, args.bucket, args.bucket)
    latent_hw = (bh // 8, bw // 8)
    build_device = torch.device("cpu") if mode == "low-vram" else device
    model = build(args.preset, build_device, dtype, args.seed)
    if mode == "low-vram":
        stream_blocks(model, device)
    if args.parallel > 1:
        from framepack.models.parallel import SequenceParallel, engine_attn_type

        model = SequenceParallel(model, attn_type=engine_attn_type(device, dtype))
    cache = TeaCache(args.teacache_threshold, args.steps) if teacache else None
    if cache is not None:
        install_teacache(model, cache)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    inputs = section_inputs(getattr(model, "transformer", model), latent_hw, args.window, device, dtype, gen)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run_section(model, inputs, min(2, args.steps), dtype, device, cache)  # warm-up
    sync(device)
    times = []
    for _ in range(args.sections):
        start = time.perf_counter()
        run_section(model, inputs, args.steps, dtype, device, cache)
        sync(device)
        times.append(time.perf_counter() - start)
    per_section = sum(times) / len(times)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    if args.parallel > 1 and peak is not None:  # the largest of the processes
        import torch.distributed as dist

        largest = torch.tensor([peak], device=device)
        dist.all_reduce(largest, op=dist.ReduceOp.MAX)
        peak = int(largest.item())
    frames = 4 * args.window  # pixel frames a (non-first) section adds
    estimate = estimate_vram(
        model.config, latent_hw, args.window, released_history_tokens(latent_hw), dtype, mode
    )
    result = {
        "preset": args.preset,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "bucket": [bh, bw],
        "window": args.window,
        "steps": args.steps,
        "dtype": args.dtype,
        "mode": mode,
        "parallel": args.parallel,
        "teacache": teacache,
        "teacache_skipped_steps": None if cache is None else cache.skipped,
        "s_per_section": round(per_section, 4),
        "s_per_frame": round(per_section / frames, 4),
        "peak_vram_gib": None if peak is None else round(peak / 2**30, 2),
        "estimated_vram_gib": round(estimate.total / 2**30, 2),
    }
    del model, inputs
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="hunyuan-13b", choices=sorted(PRESETS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--dtype",
        choices=["bfloat16", "float16", "float32"],
        help="default: bfloat16 on cuda (released), float32 on cpu",
    )
    parser.add_argument(
        "--bucket", type=int, default=640, help="bucket size (square input -> nearest bucket)"
    )
    parser.add_argument("--window", type=int, default=9)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--sections", type=int, default=2, help="timed sections per configuration")
    parser.add_argument("--modes", default="normal,low-vram")
    parser.add_argument("--teacache", default="off,on")
    parser.add_argument("--teacache-threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="sequence parallel over N processes (torchrun --nproc_per_node N)",
    )
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device; use --device cpu (with --preset tiny) for a smoke test")
    rank = 0
    if args.parallel > 1:
        if os.environ.get("WORLD_SIZE") != str(args.parallel):
            parser.error(f"--parallel {args.parallel} runs under torchrun --nproc_per_node {args.parallel}")
        if "on" in args.teacache.split(","):
            parser.error("TeaCache does not run with --parallel; give --teacache off")
        from framepack.cli.generate_parallel import join_group

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        args.device = str(join_group("cuda" if args.device.startswith("cuda") else "cpu", local_rank))
        rank = int(os.environ["RANK"])
    results = []
    for mode in args.modes.split(","):
        for tc in args.teacache.split(","):
            r = measure(args, mode, tc == "on")
            results.append(r)
            if rank > 0:
                continue
            print(
                f"{r['mode']:>8} teacache={'on ' if r['teacache'] else 'off'} {r['s_per_section']:8.3f} s/section "
                f"{r['s_per_frame']:7.4f} s/frame peak {r['peak_vram_gib']} GiB (estimate {r['estimated_vram_gib']} GiB)"
                + (f" skipped {r['teacache_skipped_steps']}/{args.steps}" if r["teacache"] else ""),
                flush=True,
            )
    if args.out and rank == 0:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
