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

torch.set_num_threads(1)
path = sys.argv[1]
bundle = load_bundle(path)
_, starts = start_frames(bundle, 2, 7, 2.0)
pipe = FramePackPipeline.from_pretrained(path)
for i, img in enumerate(starts):
    start = Path(tempfile.mkdtemp()) / f"start{i}.png"
    Image.fromarray(img).save(start)
    for cap in ("the camera pans right slowly", "the camera pans right steadily"):
        r = pipe.generate(
            prompt=cap, image=str(start), seconds=2.0, cfg=2.0, output_type="np", progress=False, seed=1
        )
        frames = (r.video * 255).round().astype(np.uint8)
        d = shifts(frames, 1)[:, 0]
        print(
            cap.split()[-1],
            i,
            "dx per frame:",
            " ".join(f"{x:+.0f}" for x in d[:16]),
            "| share of pairs moving:",
            round(float((np.abs(d) > 0.5).mean()), 2),
        )
