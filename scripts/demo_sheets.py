"""Contact sheets of what the demo model makes, each beside the true world video (docs/demo.md).

    python scripts/demo_sheets.py [--bundle framepack/assets/demo] [--out docs/img]

Writes
- demo-default.png: `framepack generate --seconds 10` (the default 5 s, doubled), and the world's own video
  of the same place and script;
- demo-minute.png: a 60-second rollout from a held-out frame with its script's caption
  timeline, one frame every 3 s, beside the true video;
- demo-captions.png: one 2-second video per world caption from the same held-out frame, each
  above the world's own video of that caption.
Frames are upscaled with nearest neighbour; times are written above each column.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from framepack.data.world import World, render_clip
from framepack.data.world_clips import SPLITS, WorldClips
from framepack.data.world_script import (
    Action,
    Script,
    all_captions,
    caption_action,
    format_timeline,
    parse_script,
)
from framepack.eval.sheet import contact_sheet
from framepack.model_bundle import demo_path, load_bundle
from framepack.pipeline import FramePackPipeline
from framepack.video import to_uint8_frames

EXAMPLE_SEED_OFFSET = 7  # scripts/package_demo.py: the example image's eval seed
EXAMPLE_SCRIPT = "right 12 steadily"


def generate(
    pipe: FramePackPipeline, start: np.ndarray | None, prompts: str, seconds: float, seed: int = 31337
):
    """Frames (uint8 (F, H, W, 3)) of one generate run; `start` None uses the model's example."""
    with tempfile.TemporaryDirectory() as tmp:
        image = None
        if start is not None:
            image = str(Path(tmp) / "start.png")
            Image.fromarray(start).save(image)
        result = pipe.generate(image=image, prompts=prompts, seconds=seconds, seed=seed,
                               out=str(Path(tmp) / "v.mp4"), progress=False)  # fmt: skip
    pixels = pipe.components.codec.decode(result.latents.float()).clamp(-1, 1)
    return to_uint8_frames(pixels)[: result.frames]


def save(sheet: Image.Image, path: Path) -> None:
    """A 256-colour PNG: the sheets are for the docs, and stay small in the repository."""
    sheet.quantize(256).save(path, optimize=True)


def default_sheet(pipe, meta, out: Path) -> None:
    seed = SPLITS["eval"][0] + EXAMPLE_SEED_OFFSET
    gen = generate(pipe, None, f"0s: {meta.default_prompt}", 10.0)
    clip = render_clip(World(seed=seed), parse_script(EXAMPLE_SCRIPT), size=meta.height, fps=round(meta.fps))
    sheet = contact_sheet([gen, clip.frames[: len(gen)]], meta.fps, every=15, columns=10, scale=2,
                          names=["generated", "true"])  # fmt: skip
    save(sheet, out / "demo-default.png")


def minute_sheet(pipe, meta, out: Path, seed: int) -> None:
    ds = WorldClips(round(60 * meta.fps), meta.height, meta.fps, split="eval", length=8, seed=seed)
    clip = ds.clip(1)
    gen = generate(pipe, clip.frames[0], format_timeline(clip.captions), 60.0)
    sheet = contact_sheet([gen, clip.frames[: len(gen)]], meta.fps, every=round(3 * meta.fps), columns=10,
                          scale=2, names=["generated", "true"])  # fmt: skip
    save(sheet, out / "demo-minute.png")


def caption_sheet(pipe, meta, out: Path, seed: int) -> None:
    clip = WorldClips(2, meta.height, meta.fps, split="eval", length=8, seed=seed).clip(2)
    frames, start = round(2 * meta.fps), tuple(clip.truth[0]["camera"])
    videos, names = [], []
    for caption in all_captions():
        action = caption_action(caption)
        gen = generate(pipe, clip.frames[0], f"0s: {caption}", 2.0)
        script = Script((Action(action.direction, 3.0, action.speed),), start)
        videos += [gen, render_clip(World(clip.seed), script, meta.height, meta.fps, frames).frames]
        names += [caption.replace("the camera ", ""), "  (true)"]
    sheet = contact_sheet(videos, meta.fps, every=6, columns=10, scale=2, names=names)
    save(sheet, out / "demo-captions.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=demo_path())
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--parts", default="default,minute,captions")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = load_bundle(args.bundle).meta
    pipe = FramePackPipeline.from_pretrained(str(args.bundle))
    parts = args.parts.split(",")
    if "default" in parts:
        default_sheet(pipe, meta, args.out)
    if "minute" in parts:
        minute_sheet(pipe, meta, args.out, args.seed)
    if "captions" in parts:
        caption_sheet(pipe, meta, args.out, args.seed)


if __name__ == "__main__":
    main()
