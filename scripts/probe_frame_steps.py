"""Frame-to-frame motion of a demo model's pans: the horizontal shift between consecutive
frames (phase correlation), from two held-out world frames, for a slow and a steady pan.

A model that moves the picture inside a latent (4 frames) gives a shift every frame (-2 or -4 px
for slow and steady pans); one that leaves a latent's frames equal gives 0, 0, 0 and a jump.

    python scripts/probe_frame_steps.py framepack/assets/demo
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from eval_demo import start_frames

from framepack.eval.camera import shifts
from framepack.model_bundle import load_bundle
from framepack.pipeline import FramePackPipeline

CAPTIONS = ("the camera pans right slowly", "the camera pans right steadily")


def main(argv: list[str] | None = None) -> int:
    path = (argv if argv is not None else sys.argv[1:])[0]
    torch.set_num_threads(1)
    _, starts = start_frames(load_bundle(path), 2, 7, 2.0)
    pipe = FramePackPipeline.from_pretrained(path)
    with tempfile.TemporaryDirectory() as folder:
        for i, img in enumerate(starts):
            start = Path(folder) / f"start{i}.png"
            Image.fromarray(img).save(start)
            for caption in CAPTIONS:
                result = pipe.generate(
                    prompt=caption,
                    image=str(start),
                    seconds=2.0,
                    cfg=2.0,
                    output_type="np",
                    progress=False,
                    seed=1,
                )
                dx = shifts((result.video * 255).round().astype(np.uint8), 1)[:, 0]  # (F - 1,)
                steps = " ".join(f"{x:+.0f}" for x in dx[:16])
                moving = float((np.abs(dx) > 0.5).mean())
                print(
                    f"{caption.split()[-1]} {i} dx per frame: {steps} | share of pairs moving: {moving:.2f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
