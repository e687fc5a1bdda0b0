"""The small model's codec: a lossless rearrangement of pixels into latents.

`PixelCodec` folds each `space_factor x space_factor` block of pixels and each group of
`time_factor` frames into channels (a 3-D pixel unshuffle), so a 64x64 RGB clip with
`space_factor=4, time_factor=4` becomes 16x16 latents with 3*4*4*4 = 192 channels. It is causal in
time like the released HunyuanVideo VAE (SPEC Sec. 5: k latent frames decode to 4k-3 frames): the
first latent holds only the first frame, replicated `time_factor` times to fill its group.

Being a rearrangement, it never bounds the quality of a model trained on it: decoding an encoded
clip returns it bit for bit (with the identity normalisation; with a fitted one, up to float32
rounding, about 1e-7). The per-colour normalisation `(x - mean) / std` plays the role of the VAE's
`scaling_factor`, giving latents roughly unit variance on the training data.

Channel order of a latent: `c = ((colour * time_factor + dt) * space_factor + dy) * space_factor + dx`.

`python -m framepack.codecs.pixel` measures the reconstruction on held-out clips (docs/codecs.md).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from framepack.codecs.base import causal_num_frames, causal_num_latents, psnr

KIND = "pixel"


@dataclass(frozen=True)
class PixelCodec:
    """Lossless causal pixel-unshuffle codec (see the module docstring).

    space_factor: pixels per latent pixel along H and W (>= 1).
    time_factor:  pixel frames per latent frame after the first (>= 1; 4 matches the VAE).
    mean, std:    per-colour (R, G, B) normalisation, latents = (pixels - mean) / std.
    """

    left_context = 1  # class attribute: decoding latent t reads latent t only (framepack.writer)
    space_factor: int = 4
    time_factor: int = 4
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        for name in ("space_factor", "time_factor"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PixelCodec.{name} must be an integer >= 1, got {value!r}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != 3 or not all(math.isfinite(m) for m in self.mean):
            raise ValueError(f"PixelCodec.mean must be 3 finite floats (R, G, B), got {self.mean!r}")
        if len(self.std) != 3 or not all(math.isfinite(s) and s > 0 for s in self.std):
            raise ValueError(f"PixelCodec.std must be 3 finite floats > 0 (R, G, B), got {self.std!r}")

    # -- the Codec protocol ------------------------------------------------------------------------

    @property
    def latent_channels(self) -> int:
        return 3 * self.time_factor * self.space_factor**2

    def num_frames(self, latent_frames: int) -> int:
        """Pixel frames decoded from `latent_frames` latents: 1 + time_factor * (latent_frames - 1)."""
        return causal_num_frames(latent_frames, self.time_factor)

    def num_latents(self, frames: int) -> int:
        """The fewest latent frames covering `frames` pixel frames (the inverse of `num_frames`)."""
        return causal_num_latents(frames, self.time_factor)

    def encode(self, pixels: Tensor) -> Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> (B, C, T, H/s, W/s) with F = 1 + t*(T-1), C = 3*t*s*s."""
        b, colours, f, h, w = self._check_pixels(pixels)
        s, t = self.space_factor, self.time_factor
        n = self.num_latents(f)
        first = pixels[:, :, :1].expand(b, colours, t, h, w)  # causal: first frame fills its group
        x = torch.cat([first, pixels[:, :, 1:]], dim=2)  # (B, 3, t*T, H, W)
        x = x.reshape(b, colours, n, t, h // s, s, w // s, s)  # (B, 3, T, t, h, s, w, s)
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # (B, 3, t, s, s, T, h, w)
        latents = x.reshape(b, self.latent_channels, n, h // s, w // s)
        return self._normalise(latents)

    def decode(self, latents: Tensor) -> Tensor:
        """(B, C, T, h, w) -> (B, 3, 1 + t*(T-1), h*s, w*s); the first group's copies are averaged."""
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"latents must be (B, {self.latent_channels}, T, h, w), got {tuple(latents.shape)}"
            )
        b, _, n, h, w = latents.shape
        s, t = self.space_factor, self.time_factor
        x = self._denormalise(latents).reshape(b, 3, t, s, s, n, h, w)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # (B, 3, T, t, h, s, w, s)
        x = x.reshape(b, 3, n * t, h * s, w * s)
        # The first latent holds t copies of frame 0; a generated one may disagree, so average them
        # (in float64, which keeps identical copies exact).
        first = x[:, :, :t].double().mean(dim=2, keepdim=True).to(x.dtype)
        return torch.cat([first, x[:, :, t:]], dim=2)

    def config(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "space_factor": self.space_factor,
            "time_factor": self.time_factor,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PixelCodec:
        """Inverse of `config()`."""
        if config.get("kind", KIND) != KIND:
            raise ValueError(f"codec config 'kind' must be {KIND!r}, got {config.get('kind')!r}")
        return cls(
            space_factor=int(config["space_factor"]),
            time_factor=int(config["time_factor"]),
            mean=tuple(config.get("mean", (0.0, 0.0, 0.0))),
            std=tuple(config.get("std", (1.0, 1.0, 1.0))),
        )

    # -- normalisation -----------------------------------------------------------------------------

    def with_normalisation(self, mean: Iterable[float], std: Iterable[float]) -> PixelCodec:
        """The same rearrangement with per-colour `(x - mean) / std` normalisation."""
        return replace(self, mean=tuple(mean), std=tuple(std))

    def fit_normalisation(self, clips: Iterable[Tensor]) -> PixelCodec:
        """Fit the per-colour mean and std on pixel clips (each (B, 3, F, H, W) or (3, F, H, W))."""
        mean, std = colour_statistics(clips)
        return self.with_normalisation(mean, std)

    def _affine(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """Per-latent-channel mean and std, each (1, C, 1, 1, 1) float32."""
        repeat = self.latent_channels // 3
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device).repeat_interleave(repeat)
        std = torch.tensor(self.std, dtype=torch.float32, device=device).repeat_interleave(repeat)
        return mean.view(1, -1, 1, 1, 1), std.view(1, -1, 1, 1, 1)

    def _is_identity(self) -> bool:
        return self.mean == (0.0, 0.0, 0.0) and self.std == (1.0, 1.0, 1.0)

    def _normalise(self, raw: Tensor) -> Tensor:
        if self._is_identity():
            return raw
        mean, std = self._affine(raw.device)
        work = torch.promote_types(raw.dtype, torch.float32)
        return ((raw.to(work) - mean) / std).to(raw.dtype)

    def _denormalise(self, latents: Tensor) -> Tensor:
        if self._is_identity():
            return latents
        mean, std = self._affine(latents.device)
        work = torch.promote_types(latents.dtype, torch.float32)
        return (latents.to(work) * std + mean).to(latents.dtype)

    def _check_pixels(self, pixels: Tensor) -> tuple[int, int, int, int, int]:
        if pixels.ndim != 5 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be (B, 3, F, H, W), got {tuple(pixels.shape)}")
        b, c, f, h, w = pixels.shape
        if f < 1 or (f - 1) % self.time_factor:
            raise ValueError(
                f"frame count must be 1 + {self.time_factor}*k (causal time_factor {self.time_factor}), "
                f"got {f}; trim or pad the clip to {self.num_frames(self.num_latents(f))} frames"
            )
        if h % self.space_factor or w % self.space_factor:
            raise ValueError(
                f"height and width must be multiples of space_factor {self.space_factor}, got {h}x{w}"
            )
        return b, c, f, h, w


def colour_statistics(clips: Iterable[Tensor]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-colour mean and std over all pixels of `clips` (each (B, 3, F, H, W) or (3, F, H, W))."""
    count = 0
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for clip in clips:
        x = clip.detach().double().cpu()
        x = x.unsqueeze(0) if x.ndim == 4 else x
        x = x.transpose(0, 1).reshape(3, -1)  # (3, N)
        count += x.shape[1]
        total += x.sum(dim=1)
        total_sq += (x * x).sum(dim=1)
    if count == 0:
        raise ValueError("colour_statistics needs at least one non-empty clip")
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


# -- measurement script ----------------------------------------------------------------------------


def palette_clips(
    count: int, frames: int, size: int, generator: torch.Generator, colours: int = 8
) -> list[Tensor]:
    """Random palette clips (3, F, size, size): blocky images of a few colours moving by 1 px a frame."""
    clips = []
    for _ in range(count):
        palette = torch.rand(colours, 3, generator=generator) * 2 - 1
        labels = torch.randint(0, colours, (size // 4 + 1, size // 4 + 1), generator=generator)
        image = palette[labels.repeat_interleave(4, 0).repeat_interleave(4, 1)].permute(2, 0, 1)
        clip = torch.stack(
            [torch.roll(image, shifts=(i, i), dims=(1, 2))[:, :size, :size] for i in range(frames)], 1
        )
        clips.append(clip)
    return clips


def _world_clips(count: int, frames: int, size: int, seed: int, split: str) -> list[Tensor]:
    """`count` clips (3, F, size, size) of the procedural world's `split` ("train" or "eval")."""
    from framepack.data.world_clips import WorldClips

    dataset = WorldClips(frames, size, split=split, length=count, seed=seed)
    return [dataset[i]["pixels"] for i in range(count)]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m framepack.codecs.pixel", description=__doc__.splitlines()[0])
    p.add_argument("--space-factor", type=int, default=4)
    p.add_argument("--time-factor", type=int, default=4)
    p.add_argument("--size", type=int, default=64, help="clip height and width in pixels")
    p.add_argument("--frames", type=int, default=33, help="frames per clip (1 + time_factor*k)")
    p.add_argument("--fit-clips", type=int, default=16, help="clips used to fit the normalisation")
    p.add_argument("--test-clips", type=int, default=16, help="held-out clips measured")
    p.add_argument("--source", choices=["world", "palette"], default="world")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Fit the normalisation on some clips, then report reconstruction on held-out clips."""
    args = _parse_args(argv)
    if args.source == "world":  # fit on training worlds, measure on held-out (eval split) worlds
        fit = _world_clips(args.fit_clips, args.frames, args.size, args.seed, "train")
        held_out = _world_clips(args.test_clips, args.frames, args.size, args.seed, "eval")
    else:
        g = torch.Generator().manual_seed(args.seed)
        clips = palette_clips(args.fit_clips + args.test_clips, args.frames, args.size, g)
        fit, held_out = clips[: args.fit_clips], clips[args.fit_clips :]
    codec = PixelCodec(args.space_factor, args.time_factor).fit_normalisation(fit)
    x = torch.stack(held_out).float()
    latents = codec.encode(x)
    y = codec.decode(latents)
    to_u8 = lambda v: ((v.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # noqa: E731
    print(f"source: {args.source}, {len(held_out)} held-out clips of {tuple(x.shape[1:])}")
    print(f"codec: {codec.config()}")
    print(f"latents: {tuple(latents.shape[1:])}, mean {latents.mean():.3f}, std {latents.std():.3f}")
    print(f"normalised round trip: PSNR {psnr(x, y):.1f} dB, max |error| {(x - y).abs().max():.2e}")
    print(f"8-bit round trip exact: {torch.equal(to_u8(x), to_u8(y))}")
    raw = PixelCodec(args.space_factor, args.time_factor)
    print(f"identity-normalised round trip: PSNR {psnr(x, raw.decode(raw.encode(x)))} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
