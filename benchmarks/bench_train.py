"""Training throughput: samples/s and peak memory of one training step (forward + backward +
AdamW) against history length, with the packed context (a schedule) or the full context (every
history frame at 1x). Each case runs in its own process so peak RSS is per case.

    python benchmarks/bench_train.py                      # the demo model, packed vs full
    python benchmarks/bench_train.py --width 128 --blocks 2,2 --size 64 --window 3 --threads 1

Results and the commands that produced them are recorded in docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_case(args: argparse.Namespace, history: int, mode: str) -> dict:
    import torch

    from framepack.codecs.pixel import PixelCodec
    from framepack.packing import Level, Schedule, pack, parse_schedule
    from framepack.text.vocab import Vocabulary
    from framepack.train.components import build_denoiser
    from framepack.train.config import PRESETS
    from framepack.train.loss import flow_matching_loss

    torch.set_num_threads(args.threads)
    base = PRESETS["demo"]
    dual, single = (int(b) for b in args.blocks.split(","))
    heads = args.width // args.head_dim
    rope_t = args.head_dim // 4 // 2 * 2
    rope_hw = (args.head_dim - rope_t) // 2
    overrides = {
        "num_attention_heads": heads,
        "attention_head_dim": args.head_dim,
        "num_layers": dual,
        "num_single_layers": single,
        "num_refiner_layers": 1,
        "rope_axes_dim": (rope_t, rope_hw, rope_hw),
    }
    config = base.replace(model_overrides=overrides, window=args.window, schedule=args.schedule)
    codec = PixelCodec(args.space, 4)
    model = build_denoiser(config, codec, Vocabulary.build(["the camera pans left slowly"]))
    if mode == "full":
        # every history frame at full resolution: the context grows with the history
        schedule = Schedule((Level((1, 2, 2), max(history, 1)),))
    else:
        schedule = parse_schedule(args.schedule)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    m, s = args.micro_batch, args.size // args.space
    c = codec.latent_channels
    gen = torch.Generator().manual_seed(0)
    history_latents = torch.randn(m, c, history, s, s, generator=gen)
    target_idx = torch.arange(history + 1, history + 1 + args.window).expand(m, -1)
    context = pack(
        history_latents,
        torch.arange(1, history + 1).expand(m, -1),
        target_idx,
        schedule,
        anchors=torch.randn(m, c, 1, s, s, generator=gen),
        anchor_indices=torch.zeros(m, 1, dtype=torch.long),
    )
    tokens = context.num_tokens()
    ids, mask = model.text_encoder.tokenize_batch(["the camera pans left slowly"] * m)
    x0 = torch.randn(m, c, args.window, s, s, generator=gen)

    def step() -> None:
        opt.zero_grad()
        loss = flow_matching_loss(
            lambda x, sig: model(x, sig, ids, mask, target_idx, context),
            x0,
            torch.randn(x0.shape, generator=gen),
            torch.rand(m, generator=gen),
        ).mean()
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        step()
    seconds = (time.perf_counter() - t0) / args.repeats
    return {
        "mode": mode,
        "history": history,
        "context_tokens": tokens,
        "noisy_tokens": args.window * (s // 2) ** 2,
        "samples_per_s": round(m / seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "params_m": round(params / 1e6, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--blocks", default="2,2", help="dual,single stream blocks")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--window", type=int, default=3)
    p.add_argument("--space", type=int, default=4, help="pixel codec space factor")
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--schedule", default="released-f1")
    p.add_argument("--histories", default="3,9,19,39")
    p.add_argument("--modes", default="packed,full")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case:
        history, mode = args.case.split(":")
        print(json.dumps(run_case(args, int(history), mode)))
        return 0
    print(json.dumps({k: v for k, v in vars(args).items() if k != "case"}))
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    for mode in args.modes.split(","):
        for history in args.histories.split(","):
            out = subprocess.run(
                [sys.executable, __file__, *base, "--case", f"{history}:{mode}"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            print(out.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
