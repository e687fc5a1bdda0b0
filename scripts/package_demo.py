"""Package a trained demo run as the bundled model (`framepack/assets/demo/`).

    python scripts/package_demo.py RUN_DIR [--out framepack/assets/demo]

Writes the run's latest EMA weights as a bundle (transformer in float16), the example start
image that `framepack generate` uses with no arguments (a frame of a held-out world video: an
"eval"-split seed, never seen in training) and the default prompt (that video's caption).
The model card (README.md) is written separately with the measured numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from framepack.data.world import World, render_clip
from framepack.data.world_clips import SPLITS
from framepack.data.world_script import parse_script
from framepack.model_bundle import load_meta, update_meta
from framepack.train.loop import export_bundle

EXAMPLE_SEED_OFFSET = 7  # eval seed = first eval seed + this
EXAMPLE_SCRIPT = "right 12 steadily"  # scripts/demo_sheets.py shows its true video beside the generated one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, default=Path("framepack/assets/demo"))
    args = parser.parse_args()

    export_bundle(args.run, args.out, dtype=torch.float16)
    meta = load_meta(args.out)
    seed = SPLITS["eval"][0] + EXAMPLE_SEED_OFFSET
    clip = render_clip(World(seed=seed), parse_script(EXAMPLE_SCRIPT), size=meta.height, fps=round(meta.fps))
    Image.fromarray(clip.frames[0]).save(args.out / "example.png")
    update_meta(args.out, default_prompt=clip.captions[0][1])
    print(f"packaged {args.run} -> {args.out} (example: eval seed {seed}, prompt {clip.captions[0][1]!r})")


if __name__ == "__main__":
    main()
