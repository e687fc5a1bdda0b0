"""Contact sheet of a learned codec on held-out world clips: for each clip a row of input frames
and below it the reconstruction (encode, decode), frames upscaled with nearest neighbour.

    python scripts/codec_sheet.py runs/ae2/codec --out docs/img/codec-ae.png --clips 3 --frames 9
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from framepack.codecs.autoencoder import AutoencoderCodec
from framepack.eval.codec import held_out_clips
from framepack.eval.metrics import as_frames


def sheet(codec: AutoencoderCodec, clips: int, frames: int, scale: int, seed: int) -> np.ndarray:
    """uint8 (2 * clips * H * scale, frames * W * scale, 3): input row, reconstruction row."""
    x = held_out_clips(clips, frames, 64, 30.0, seed)  # (clips, 3, F, 64, 64)
    y = codec.decode(codec.encode(x))
    rows = [np.concatenate(list(as_frames(v)), axis=1) for pair in zip(x, y, strict=True) for v in pair]
    return np.concatenate(rows, axis=0).repeat(scale, axis=0).repeat(scale, axis=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("codec", type=Path, help="an autoencoder folder (config.json + model.safetensors)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--clips", type=int, default=3)
    p.add_argument("--frames", type=int, default=9, help="1 + 4k frames per clip")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--seed", type=int, default=7, help="which held-out clips (eval split)")
    args = p.parse_args()
    torch.set_num_threads(1)
    image = sheet(AutoencoderCodec.load(args.codec), args.clips, args.frames, args.scale, args.seed)
    Image.fromarray(image).save(args.out)
    print(f"{args.out}: {image.shape[1]}x{image.shape[0]}")


if __name__ == "__main__":
    main()
