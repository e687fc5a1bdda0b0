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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stage", choices=["train", "rollouts", "report", "all"])
    parser.add_argument("--root", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--only", nargs="*", help="these finetunes / cells only")
    parser.add_argument("--procs", type=int, default=2, help="training processes (torchrun)")
    args = parser.parse_args(argv)
    if args.stage in ("train", "all"):
        for name in args.only or FINETUNES:
            finetune(args.root, name, args.procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
