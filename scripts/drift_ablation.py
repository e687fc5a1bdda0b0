"""The paper's drift ablation on the procedural world, from ground truth (docs/drift.md).

One command reproduces it, in three resumable stages (each skips what is already done):

    python scripts/drift_ablation.py train      # finetune every variant from the demo model
    python scripts/drift_ablation.py rollouts   # 60-s rollouts on held-out revisit scripts
    python scripts/drift_ablation.py report     # metrics, 95% intervals, plots, contact sheets

or `python scripts/drift_ablation.py all`. Everything lands in `--root` (runs/ablation):
`<variant>/` training runs (their `bundle/`), `rollouts/<cell>-<i>.npz` generated frames,
`report.json`, and the pictures in docs/img/drift-*.png.

Every finetune starts from the bundled demo model with the same recipe and budget
(configs/ablation/base.json: the same steps, samples and schedule), changing only what its
variant tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "configs" / "ablation" / "base.json"
DEMO = ROOT / "framepack" / "assets" / "demo"
SECONDS, FPS, SIZE, STEPS = 60.0, 30, 64, 12
WINDOWS = 10  # 6-s windows over the minute

# Held-out revisit scripts (one per rollout seed, on the eval split's worlds): out-and-back
# pans at the speeds the demo follows (steadily 4 px/frame, slowly 2 px/frame), so every view is
# left and shown again; each script ends where it began, as the inverted plan assumes.
SCRIPTS = (
    "hold 4, right 6, hold 4, left 6, hold 4, down 8 slowly, hold 4, up 8 slowly, right 3, left 3, hold 10",
    "hold 4, down 6, hold 4, up 6, hold 4, left 8 slowly, hold 4, right 8 slowly, down 3, up 3, hold 10",
    "hold 4, left 6, hold 4, right 6, hold 4, up 8 slowly, hold 4, down 8 slowly, left 3, right 3, hold 10",
)
KEYFRAME_SECONDS = (15.0, 30.0, 45.0)  # true keyframes of the multi-endpoint cell (and the end)

# Cells: name -> (finetune, plan, generation options). Every cell runs on every script.
CELLS: dict[str, tuple[str, str, dict]] = {
    "f1": ("f1", "forward", {}),
    "k128": ("k128", "forward", {}),
    "k256": ("k256", "forward", {}),
    "inverted": ("inverted", "inverted", {}),
    "endpoints": ("endpoints", "endpoints", {}),
    "multi-endpoint": ("endpoints", "multi-endpoint", {"keyframes": True}),
    "noise-0.1": ("noisy", "forward", {"history_noise": 0.1}),
    "noise-0.5": ("noisy", "forward", {"history_noise": 0.5}),
    "history-cfg-2": ("f1-hdrop", "forward", {"history_cfg": 2.0}),
    "similarity": ("f1", "forward", {"ranking": "similarity"}),
    "hybrid": ("f1", "forward", {"ranking": "hybrid"}),
    "f1-hdrop": ("f1-hdrop", "forward", {}),  # control: history dropout in training, no guidance
}
EDGE = 0.15  # the paper's start-versus-end contrast: first and last 15% of the video

# Finetunes: variant -> the config fields it changes from configs/ablation/base.json.
FINETUNES: dict[str, dict] = {
    "f1": {},  # forward (F1), vanilla: the baseline that drifts
    "k128": {"discretize_history": 128},  # history discretization, the paper's text
    "k256": {"discretize_history": 256},  # ... and its table
    "inverted": {"layouts": ["inverted"]},  # inverted anti-drifting sections
    "endpoints": {"layouts": ["endpoints"]},  # both-sided sections (endpoints, multi-endpoint)
    "noisy": {"history_noise": 0.5, "history_noise_uniform": True},  # diffusion-forcing style
    "f1-hdrop": {"history_dropout": 0.1},  # history dropped 10%: for history guidance
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def finetune(root: Path, name: str, procs: int) -> None:
    """Run (or resume) one variant's finetune; a finished run (its bundle) is skipped."""
    run = root / name
    if (run / "bundle" / "framepack.json").is_file():
        log(f"{name}: finished earlier ({run / 'bundle'})")
        return
    config = json.loads(BASE_CONFIG.read_text()) | FINETUNES[name]
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.json"
    path.write_text(json.dumps(config, indent=2, sort_keys=True))
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs)]
    launch += ["-m", "framepack", "train", "--out", str(run), "--no-progress"]
    if (run / "config.json").is_file():
        launch += ["--resume"]
    else:
        launch += ["--config", str(path), "--init", str(DEMO)]
    log(f"{name}: {' '.join(launch[1:])}")
    t0 = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(launch, check=True, env=env)
    minutes = (time.perf_counter() - t0) / 60
    (run / "wall_minutes.txt").write_text(f"{minutes:.2f}\n")
    log(f"{name}: done in {minutes:.1f} min")


# -- rollouts -----------------------------------------------------------------------------------


def world_clip(i: int):
    """Script i rendered in the i-th world of the held-out split: the true 60-s video."""
    from framepack.data.world import World, render_clip
    from framepack.data.world_clips import WorldClips
    from framepack.data.world_script import parse_script, random_script

    clips = WorldClips(round(SECONDS * FPS), SIZE, FPS, split="eval", length=len(SCRIPTS), seed=0)
    seed = clips.clip_seed(i)
    start = random_script(seed, SECONDS, FPS).start  # a place of the world nobody trained on
    script = parse_script(SCRIPTS[i], start)
    return render_clip(World(seed, clips.config), script, SIZE, FPS, round(SECONDS * FPS))


_PIPES: dict[str, object] = {}


def rollout(root: Path, cell: str, i: int) -> Path:
    """Generate cell `cell` on script i (skipped when done); writes `<cell>-<i>.npz` (uint8
    frames) and `<cell>-<i>.json` (its metrics)."""
    import numpy as np
    from PIL import Image

    from framepack.data.world_script import format_timeline
    from framepack.pipeline import FramePackPipeline

    out = root / "rollouts" / f"{cell}-{i}.json"
    if out.is_file():
        return out
    variant, plan, opts = CELLS[cell]
    clip = world_clip(i)
    tmp = root / "rollouts" / f"{cell}-{i}.inputs"
    tmp.mkdir(parents=True, exist_ok=True)
    Image.fromarray(clip.frames[0]).save(tmp / "start.png")
    options = {k: v for k, v in opts.items() if k != "keyframes"}
    if opts.get("keyframes"):
        keys = []
        for t in KEYFRAME_SECONDS:
            Image.fromarray(clip.frames[round(t * FPS)]).save(tmp / f"key-{t:g}.png")
            keys.append((t, str(tmp / f"key-{t:g}.png")))
        Image.fromarray(clip.frames[-1]).save(tmp / "end.png")
        options |= {"keyframes": keys, "end_image": str(tmp / "end.png")}
    if variant not in _PIPES:
        _PIPES[variant] = FramePackPipeline.from_pretrained(str(root / variant / "bundle"))
    t0 = time.perf_counter()
    result = _PIPES[variant].generate(
        image=str(tmp / "start.png"), prompts=format_timeline(clip.captions), seconds=SECONDS,
        seed=1000 + i, plan=plan, steps=STEPS, out=None, output_type="np", progress=False, **options,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    frames = (result.video * 255).round().astype(np.uint8)
    metrics = rollout_metrics(frames, clip) | {"wall_seconds": round(wall, 1), "cell": cell, "script": i}
    np.savez_compressed(out.with_suffix(".npz"), frames=frames)
    out.write_text(json.dumps(metrics, indent=1))
    log(
        f"{cell}-{i}: {wall:.0f} s, revisit {metrics['revisit_psnr']:.2f} dB, following {metrics['following']:.2f}"
    )
    return out


def rollout_metrics(frames, clip) -> dict:
    """Per-window and start/end metrics of one rollout against its true video (docs/drift.md)."""
    import numpy as np

    from framepack.data.world import PALETTE
    from framepack.data.world_script import prompted_velocity
    from framepack.eval.camera import following
    from framepack.eval.metrics import color_histograms, palette_share, sharpness
    from framepack.eval.revisit import revisit_pairs, revisit_psnr

    true = clip.frames[: len(frames)]
    parts = np.array_split(np.arange(len(frames)), WINDOWS)
    sharp_g, sharp_t = sharpness(frames), sharpness(true)
    hist_g, hist_t = color_histograms(frames), color_histograms(true)
    follow = following(frames, prompted_velocity(clip.captions, len(frames), FPS))
    matched = np.asarray(follow["matched"], dtype=np.float64)
    pair_parts = np.array_split(np.arange(len(matched)), WINDOWS)
    cameras = np.array([t["camera"] for t in clip.truth])[: len(frames)]
    pairs = revisit_pairs(cameras, min_gap=2 * FPS, away=SIZE, every=5)
    edges = {}
    for side in ("first", "last"):
        n, m = round(EDGE * len(frames)), round(EDGE * len(matched))
        f = slice(0, n) if side == "first" else slice(len(frames) - n, len(frames))
        edges[side] = {
            "palette": palette_share(frames[f], PALETTE, 16),
            "sharpness_ratio": float(sharp_g[f].mean() / sharp_t[f].mean()),
            "histogram_distance": float(0.5 * np.abs(hist_g[f].mean(0) - hist_t[f].mean(0)).sum()),
            "following": float(matched[:m].mean() if side == "first" else matched[-m:].mean()),
        }
    return {
        "edges": edges,
        "windows": {
            "palette": [palette_share(frames[p], PALETTE, 16) for p in parts],
            "palette_true": [palette_share(true[p], PALETTE, 16) for p in parts],
            "sharpness": [float(sharp_g[p].mean()) for p in parts],
            "sharpness_true": [float(sharp_t[p].mean()) for p in parts],
            "histogram_distance": [
                float(0.5 * np.abs(hist_g[p].mean(0) - hist_t[p].mean(0)).sum()) for p in parts
            ],
            "following": [float(matched[p].mean()) for p in pair_parts],
        },
        "following": float(matched.mean()),
        "revisit_pairs": len(pairs),
        "revisit_psnr": revisit_psnr(frames, pairs),
        "revisit_psnr_true": revisit_psnr(true, pairs),
    }


def _rollout_task(task: tuple[str, str, int]) -> str:
    import torch

    torch.set_num_threads(1)
    root, cell, i = task
    return str(rollout(Path(root), cell, i))


def run_rollouts(root: Path, cells: list[str], workers: int) -> None:
    import multiprocessing

    tasks = [(str(root), cell, i) for i in range(len(SCRIPTS)) for cell in cells]
    missing = [c for c in {CELLS[c][0] for c in cells} if not (root / c / "bundle").is_dir()]
    if missing:
        raise SystemExit(f"finetunes not finished: {missing}; run the train stage first")
    with multiprocessing.get_context("fork").Pool(workers, maxtasksperchild=4) as pool:
        for done in pool.imap_unordered(_rollout_task, tasks):
            log(f"saved {done}")


# -- report -------------------------------------------------------------------------------------

SUMMARY = (  # (column, how to read it from a rollout's metrics)
    ("revisit PSNR (dB)", lambda m: m["revisit_psnr"]),
    ("following", lambda m: m["following"]),
    ("following, last 15%", lambda m: m["edges"]["last"]["following"]),
    ("on-palette, first 15%", lambda m: m["edges"]["first"]["palette"]),
    ("on-palette, last 15%", lambda m: m["edges"]["last"]["palette"]),
    ("sharpness / true, last 15%", lambda m: m["edges"]["last"]["sharpness_ratio"]),
    ("histogram dist., first 15%", lambda m: m["edges"]["first"]["histogram_distance"]),
    ("histogram dist., last 15%", lambda m: m["edges"]["last"]["histogram_distance"]),
)


def interval(values) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (scipy), over rollouts."""
    import numpy as np
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def report(root: Path, cells: list[str], img: Path) -> dict:
    """Recompute every rollout's metrics from its frames, aggregate per cell, draw the pictures."""
    import numpy as np

    per_cell: dict[str, list[dict]] = {}
    frames0: dict[str, np.ndarray] = {}
    clips = [world_clip(i) for i in range(len(SCRIPTS))]
    for cell in cells:
        for i, clip in enumerate(clips):
            path = root / "rollouts" / f"{cell}-{i}.npz"
            if not path.is_file():
                continue
            frames = np.load(path)["frames"]
            saved = json.loads(path.with_suffix(".json").read_text())
            m = rollout_metrics(frames, clip) | {"wall_seconds": saved["wall_seconds"]}
            per_cell.setdefault(cell, []).append(m)
            if i == 0:
                frames0[cell] = frames
    table = {}
    for cell, ms in per_cell.items():
        row = {name: interval([get(m) for m in ms]) for name, get in SUMMARY}
        row["rollouts"] = len(ms)
        row["wall_seconds"] = sum(m["wall_seconds"] for m in ms)
        table[cell] = row
    truth = [rollout_metrics(c.frames, c) for c in clips]
    table["true video"] = {name: interval([get(m) for m in truth]) for name, get in SUMMARY}
    table["true video"]["rollouts"] = len(truth)
    draw_curves(per_cell, truth, img / "drift-metrics.png")
    draw_sheets(frames0, clips[0].frames, img / "drift-sheets.png")
    return {
        "cells": table,
        "codebooks": codebook_fidelity(root, clips),
        "training": training_record(root),
        "settings": settings_record(),
    }


def codebook_fidelity(root: Path, clips: list) -> dict:
    """What discretization does to true history: the true minutes encoded, every latent vector
    snapped to the codebook and decoded, against the plain decode (PSNR, on-palette share)."""
    import numpy as np
    import torch

    from framepack.data.world import PALETTE
    from framepack.eval.metrics import palette_share, psnr
    from framepack.model_bundle import load_bundle

    out = {}
    for name in ("k128", "k256"):
        if not (root / name / "bundle").is_dir():
            continue
        bundle = load_bundle(root / name / "bundle")
        scores, palettes = [], []
        for clip in clips:
            frames = clip.frames[: 1 + 4 * ((len(clip.frames) - 1) // 4)]  # 1 + 4k frames
            pixels = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
            latents = bundle.codec.encode(pixels)  # (1, C, T, h, w)
            snapped = bundle.codebook(latents)
            plain = bundle.codec.decode(latents).clamp(-1, 1)
            quant = bundle.codec.decode(snapped).clamp(-1, 1)
            to_u8 = lambda x: ((x[0].permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy()  # noqa: E731
            scores.append(psnr(to_u8(plain), to_u8(quant)))
            palettes.append(palette_share(to_u8(quant), PALETTE, 16))
        out[name] = {"psnr_db": float(np.mean(scores)), "palette_share": float(np.mean(palettes))}
    return out


def draw_curves(per_cell: dict[str, list[dict]], truth: list[dict], path: Path) -> None:
    """Each metric per 6-s window over the minute, one line per cell (mean over rollouts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = (
        ("palette", "on-palette share"),
        ("sharpness", "sharpness (Laplacian variance)"),
        ("histogram_distance", "colour histogram distance to the true video"),
        ("following", "camera-motion following"),
    )
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    t = (np.arange(WINDOWS) + 0.5) * SECONDS / WINDOWS
    styles = ["-", "--", ":", "-."]
    for ax, (key, title) in zip(axes.flat, keys, strict=True):
        for k, (cell, ms) in enumerate(per_cell.items()):
            y = np.mean([m["windows"][key] for m in ms], axis=0)
            ax.plot(t, y, styles[k // 10 % 4], marker="o", ms=3, label=cell)
        if key in ("palette", "sharpness"):
            y = np.mean([m["windows"][key + "_true"] for m in truth], axis=0)
            ax.plot(t, y, "k-", lw=2.5, label="true video")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("seconds")
    axes[0, 0].legend(fontsize=7, ncol=2)
    fig.suptitle("Drift over a minute: each variant's mean over its rollouts, per 6-s window")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def draw_sheets(frames: dict, true, path: Path) -> None:
    """Script 0's rollout of every cell under the true video, one frame every 5 s."""
    from framepack.eval.sheet import contact_sheet

    videos, names = [true], ["true"]
    for cell, video in frames.items():
        videos.append(video)
        names.append(cell)
    times = [*range(0, round(SECONDS * FPS), 5 * FPS), round(SECONDS * FPS) - 1]
    sheet = contact_sheet(videos, FPS, columns=len(times), scale=2, names=names, times=times)
    sheet.save(path)


def training_record(root: Path) -> dict:
    """Each finetune's steps, samples and wall minutes (compute record)."""
    out = {}
    for name in FINETUNES:
        run = root / name
        if not (run / "log.jsonl").is_file():
            continue
        last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
        wall = run / "wall_minutes.txt"
        out[name] = {
            "steps": last["step"],
            "samples": last["samples"],
            "wall_minutes": float(wall.read_text()) if wall.is_file() else None,
        }
    return out


def settings_record() -> dict:
    return {"seconds": SECONDS, "fps": FPS, "size": SIZE, "steps": STEPS, "scripts": list(SCRIPTS)}


def markdown_table(table: dict) -> str:
    """The report's table in Markdown: mean [± 95% half-width] per column."""
    import math

    cols = [name for name, _ in SUMMARY]
    lines = ["| cell | n | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for cell, row in table.items():
        cells = []
        for c in cols:
            mean, half = row[c]
            cells.append(f"{mean:.3g}" + ("" if math.isnan(half) else f" ± {half:.2g}"))
        lines.append(f"| {cell} | {row['rollouts']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stage", choices=["train", "rollouts", "report", "all"])
    parser.add_argument("--root", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--only", nargs="*", help="these finetunes / cells only")
    parser.add_argument("--procs", type=int, default=2, help="training processes (torchrun)")
    parser.add_argument("--workers", type=int, default=2, help="rollout processes (one thread each)")
    parser.add_argument("--img", type=Path, default=ROOT / "docs" / "img", help="where the pictures go")
    args = parser.parse_args(argv)
    if args.stage in ("train", "all"):
        for name in args.only or FINETUNES:
            finetune(args.root, name, args.procs)
    if args.stage in ("rollouts", "all"):
        run_rollouts(args.root, args.only or list(CELLS), args.workers)
    if args.stage in ("report", "all"):
        result = report(args.root, args.only or list(CELLS), args.img)
        (args.root / "report.json").write_text(json.dumps(result, indent=1))
        table = markdown_table(result["cells"])
        (args.root / "report.md").write_text(table + "\n")
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
