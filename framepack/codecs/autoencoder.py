"""An optional learned codec: a small per-frame convolutional autoencoder, 8x in space.

The demo model uses the lossless `PixelCodec`; this codec exists to study how a lossy, compressing
codec (like the HunyuanVideo VAE, 8x in space) changes drift, on the procedural world. It works
frame by frame (`time_factor` 1) and is deterministic (no KL term, no sampling). Latents are
multiplied by a fitted `scaling_factor`, as the VAE's, for roughly unit variance.

Saved as a folder: `config.json` (the `AutoencoderConfig` fields and `scaling_factor`) and
`model.safetensors`. Train and measure with `python -m framepack.codecs.autoencoder --out DIR`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from framepack.codecs.base import causal_num_frames, causal_num_latents, psnr
from framepack.errors import UserError

KIND = "autoencoder"


@dataclass(frozen=True)
class AutoencoderConfig:
    """latent_channels: C; width: channels of the first stage (doubled per stage, capped at 4x);
    space_factor: spatial compression, a power of two >= 2."""

    latent_channels: int = 16
    width: int = 32
    space_factor: int = 8

    def __post_init__(self) -> None:
        if self.latent_channels < 1 or self.width < 1:
            raise ValueError(f"AutoencoderConfig.latent_channels and width must be >= 1, got {self}")
        s = self.space_factor
        if s < 2 or s & (s - 1):
            raise ValueError(f"AutoencoderConfig.space_factor must be a power of two >= 2, got {s}")

    def stage_widths(self) -> list[int]:
        stages = int(math.log2(self.space_factor))
        return [self.width * min(2**i, 4) for i in range(stages + 1)]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.SiLU()
    )


class FrameAutoencoder(nn.Module):
    """Images (N, 3, H, W) <-> latents (N, C, H/s, W/s)."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        w = config.stage_widths()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w[0], 3, padding=1),
            *[nn.Sequential(nn.Conv2d(w[i], w[i + 1], 4, stride=2, padding=1), _block(w[i + 1], w[i + 1]))
              for i in range(len(w) - 1)],
            nn.Conv2d(w[-1], config.latent_channels, 1),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Conv2d(config.latent_channels, w[-1], 3, padding=1),
            *[nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _block(w[i], w[i - 1]))
              for i in range(len(w) - 1, 0, -1)],
            nn.Conv2d(w[0], 3, 3, padding=1),
        )  # fmt: skip

    def forward(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) -> reconstruction (N, 3, H, W)."""
        return self.decoder(self.encoder(images))


class AutoencoderCodec:
    """`Codec` over a trained `FrameAutoencoder` (per frame, so `time_factor` is 1)."""

    time_factor = 1

    def __init__(self, model: FrameAutoencoder, scaling_factor: float = 1.0, path: str | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.scaling_factor = float(scaling_factor)
        self.path = path
        self.latent_channels = model.config.latent_channels
        self.space_factor = model.config.space_factor

    def encode(self, pixels: Tensor) -> Tensor:
        """(B, 3, F, H, W) -> (B, C, F, H/s, W/s)."""
        b, _, f, h, w = pixels.shape
        if h % self.space_factor or w % self.space_factor:
            raise ValueError(
                f"height and width must be multiples of space_factor {self.space_factor}, got {h}x{w}"
            )
        frames = pixels.transpose(1, 2).reshape(b * f, 3, h, w)  # (B*F, 3, H, W)
        z = self.model.encoder(frames.to(self._dtype())) * self.scaling_factor  # (B*F, C, h, w)
        return z.reshape(b, f, *z.shape[1:]).transpose(1, 2).to(pixels.dtype)

    def decode(self, latents: Tensor) -> Tensor:
        """(B, C, T, h, w) -> (B, 3, T, h*s, w*s), clamped to [-1, 1]."""
        b, c, t, h, w = latents.shape
        z = latents.transpose(1, 2).reshape(b * t, c, h, w).to(self._dtype()) / self.scaling_factor
        x = self.model.decoder(z).clamp(-1, 1)  # (B*T, 3, H, W)
        return x.reshape(b, t, *x.shape[1:]).transpose(1, 2).to(latents.dtype)

    def num_frames(self, latent_frames: int) -> int:
        return causal_num_frames(latent_frames, 1)

    def num_latents(self, frames: int) -> int:
        return causal_num_latents(frames, 1)

    def config(self) -> dict[str, Any]:
        return {"kind": KIND, "path": self.path, "scaling_factor": self.scaling_factor}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AutoencoderCodec:
        if not config.get("path"):
            raise UserError(
                "this codec config names no autoencoder folder; train one with framepack.codecs.autoencoder"
            )
        return cls.load(config["path"])

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def save(self, directory: str | Path) -> None:
        """Write `config.json` and `model.safetensors` into `directory`."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"kind": KIND, **asdict(self.model.config), "scaling_factor": self.scaling_factor}
        (out / "config.json").write_text(json.dumps(meta, indent=2))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
                  str(out / "model.safetensors"))  # fmt: skip
        self.path = str(out)

    @classmethod
    def load(cls, directory: str | Path) -> AutoencoderCodec:
        folder = Path(directory)
        if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
            raise UserError(f"no autoencoder in {folder} (need config.json and model.safetensors)")
        meta = json.loads((folder / "config.json").read_text())
        model = FrameAutoencoder(
            AutoencoderConfig(**{k: meta[k] for k in AutoencoderConfig.__dataclass_fields__})
        )
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        return cls(model, meta.get("scaling_factor", 1.0), str(folder))


def train_autoencoder(
    config: AutoencoderConfig,
    frames: Tensor,
    steps: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    generator: torch.Generator | None = None,
    log_every: int = 0,
) -> AutoencoderCodec:
    """Fit on `frames` (N, 3, H, W) in [-1, 1] with MSE and AdamW (cosine decay); returns the codec
    with its `scaling_factor` set to 1 / std of the training latents."""
    model = FrameAutoencoder(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    for step in range(steps):
        batch = frames[torch.randint(0, len(frames), (batch_size,), generator=generator)]
        loss = F.mse_loss(model(batch), batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step}: mse {loss.item():.5f}")
    with torch.no_grad():
        std = model.encoder(frames[: 4 * batch_size]).std().item()
    return AutoencoderCodec(model, 1.0 / std)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m framepack.codecs.autoencoder", description=__doc__.splitlines()[0]
    )
    p.add_argument("--out", required=True, help="folder to save the trained autoencoder")
    p.add_argument("--latent-channels", type=int, default=16)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--train-clips", type=int, default=64)
    p.add_argument("--test-clips", type=int, default=16)
    p.add_argument("--frames", type=int, default=9, help="frames per clip")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train on training-split world clips, save, and report PSNR on held-out (eval-split) clips."""
    from framepack.data.world_clips import WorldClips

    args = _parse_args(argv)
    train = WorldClips(args.frames, args.size, split="train", length=args.train_clips, seed=args.seed)
    held = WorldClips(args.frames, args.size, split="eval", length=args.test_clips, seed=args.seed)
    frames = torch.cat([train[i]["pixels"].transpose(0, 1) for i in range(len(train))])  # (N, 3, H, W)
    config = AutoencoderConfig(args.latent_channels, args.width, 8)
    g = torch.Generator().manual_seed(args.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)  # weight initialisation, without touching the caller's RNG
        start = time.perf_counter()
        codec = train_autoencoder(config, frames, args.steps, args.batch_size, generator=g, log_every=100)
    codec.save(args.out)
    x = torch.stack([held[i]["pixels"] for i in range(len(held))])  # (B, 3, F, H, W)
    with torch.no_grad():
        z = codec.encode(x)
        y = codec.decode(z)
    print(f"trained {args.steps} steps in {time.perf_counter() - start:.0f} s on {len(frames)} frames")
    print(f"latents {tuple(z.shape[1:])} (std {z.std():.3f}); held-out PSNR {psnr(x, y):.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
