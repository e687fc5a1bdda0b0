"""A learned causal video autoencoder, shaped like HunyuanVideo's VAE: the first frame alone, then 4
frames per latent, 8x in space, 16 channels.

Causality in time is HunyuanVideo's: latent 0 is the first frame on its own (encoded as that frame
repeated 4 times), latent t >= 1 holds frames 4t-3 .. 4t. Each group of 4 frames is encoded on
its own, so a latent never depends on frames after its group; the decoder reads a latent and the
one before it (the causal context that keeps group boundaries seamless), and draws the group's 4
frames. Motion inside a group is carried by the latent's channels and drawn by the decoder, which
is what lets a model on these latents move the picture smoothly inside a latent (issue 20).

    encoder: per-frame conv stem (frames as batch, full -> 1/2 res), frames stacked in channels,
             then a 2-D conv tower 1/2 -> 1/8 res, 1x1 to C channels          (N, 4, 3, H, W) -> (N, C, h, w)
    decoder: [z_t, z_{t-1}] -> 2-D conv tower 1/8 -> 1/2 res, split into 4 frame feature maps, a
             per-frame conv tail 1/2 -> full res                               (N, 2C, h, w) -> (N, 4, 3, H, W)

Deterministic (no sampling): training adds a little noise to the latents before decoding and
penalises their size, so the decoder is robust to the imperfect latents a generator makes.
Latents are multiplied by a fitted `scaling_factor` for unit variance, as the VAE's.

Saved as a folder: `config.json` (the `AutoencoderConfig` fields, `scaling_factor`, `card`) and
`model.safetensors`. Trained by `framepack codec train` (framepack/codecs/autoencoder_train.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from framepack.codecs.base import causal_num_frames, causal_num_latents
from framepack.errors import UserError

KIND = "autoencoder"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STYLES = ("conv", "dc")


@dataclass(frozen=True)
class AutoencoderConfig:
    """latent_channels: C; width: channels of the 1/2 .. 1/8 resolution towers; frame_width:
    channels of the per-frame full- and half-resolution layers; blocks: residual blocks per
    resolution; space_factor 8 and time_factor 4 are HunyuanVideo's. style "dc": space-to-channel
    stages with parameter-free shortcuts (DC-AE), every layer at 1/2 resolution or less; "conv":
    strided convolutions and nearest upsampling with full-resolution per-frame layers (the first
    pilot, docs/training.md: half as fast per step and slower to learn). "dc" needs `width` a
    multiple of `latent_channels`."""

    latent_channels: int = 16
    width: int = 96
    frame_width: int = 32
    blocks: int = 1
    space_factor: int = 8
    time_factor: int = 4
    style: str = "dc"

    def __post_init__(self) -> None:
        for name in ("latent_channels", "width", "frame_width", "time_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AutoencoderConfig.{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.blocks, bool) or not isinstance(self.blocks, int) or self.blocks < 0:
            raise ValueError(f"AutoencoderConfig.blocks must be an integer >= 0, got {self.blocks!r}")
        if self.style not in STYLES:
            raise ValueError(f"AutoencoderConfig.style must be one of {STYLES}, got {self.style!r}")
        if self.style == "dc" and self.width % self.latent_channels:
            raise ValueError(
                f"AutoencoderConfig.width ({self.width}) must be a multiple of latent_channels "
                f"({self.latent_channels}) for style 'dc'"
            )
        if self.space_factor != 8:
            raise ValueError(
                f"AutoencoderConfig.space_factor must be 8 (HunyuanVideo's), got {self.space_factor}"
            )


class ResBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and SiLU, plus the input: (N, C, H, W) -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        groups = 8 if channels % 8 == 0 else 1
        self.body = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _stage(channels: int, blocks: int) -> list[nn.Module]:
    return [ResBlock(channels) for _ in range(blocks)]


class Encoder(nn.Module):
    """(N, T4, 3, H, W) groups of `time_factor` frames -> (N, C, H/8, W/8)."""

    def __init__(self, c: AutoencoderConfig) -> None:
        super().__init__()
        f, w, t = c.frame_width, c.width, c.time_factor
        self.stem = nn.Sequential(
            nn.Conv2d(3, f, 3, padding=1), nn.SiLU(), nn.Conv2d(f, f, 4, stride=2, padding=1)
        )
        self.tower = nn.Sequential(
            nn.Conv2d(t * f, w, 3, padding=1), *_stage(w, c.blocks),           # 1/2
            nn.Conv2d(w, w, 4, stride=2, padding=1), *_stage(w, c.blocks),     # 1/4
            nn.Conv2d(w, w, 4, stride=2, padding=1), *_stage(w, c.blocks),     # 1/8
            nn.GroupNorm(8 if w % 8 == 0 else 1, w), nn.SiLU(), nn.Conv2d(w, c.latent_channels, 1),
        )  # fmt: skip

    def forward(self, groups: Tensor) -> Tensor:
        n, t, _, h, w = groups.shape
        x = self.stem(groups.reshape(n * t, 3, h, w))  # (N*T4, f, H/2, W/2)
        return self.tower(x.reshape(n, t * x.shape[1], h // 2, w // 2))  # (N, C, H/8, W/8)


class Decoder(nn.Module):
    """(N, 2C, h, w) = [latent, previous latent] -> (N, T4, 3, 8h, 8w)."""

    def __init__(self, c: AutoencoderConfig) -> None:
        super().__init__()
        f, w, t = c.frame_width, c.width, c.time_factor
        self.time_factor = t
        self.tower = nn.Sequential(
            nn.Conv2d(2 * c.latent_channels, w, 3, padding=1), *_stage(w, c.blocks),  # 1/8
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w, w, 3, padding=1), *_stage(w, c.blocks),  # 1/4
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w, w, 3, padding=1), *_stage(w, c.blocks),  # 1/2
            nn.GroupNorm(8 if w % 8 == 0 else 1, w), nn.SiLU(), nn.Conv2d(w, t * f, 3, padding=1),
        )  # fmt: skip
        self.tail = nn.Sequential(
            *_stage(f, c.blocks),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(f, f, 3, padding=1),  # full
            nn.GroupNorm(8 if f % 8 == 0 else 1, f), nn.SiLU(), nn.Conv2d(f, 3, 3, padding=1),
        )  # fmt: skip

    def forward(self, pair: Tensor) -> Tensor:
        n, _, h, w = pair.shape
        x = self.tower(pair)  # (N, T4*f, 4h, 4w)
        t = self.time_factor
        x = self.tail(x.reshape(n * t, x.shape[1] // t, 4 * h, 4 * w))  # (N*T4, 3, 8h, 8w)
        return x.reshape(n, t, 3, 8 * h, 8 * w)


class SpaceToChannel(nn.Module):
    """Down 2x with a parameter-free shortcut (DC-AE, Chen et al. 2024): space-to-channel, then
    a conv to `cout`, plus the space-to-channel input averaged in groups to `cout` channels.
    (N, cin, H, W) -> (N, cout, H/2, W/2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.cout = cout
        self.conv = nn.Conv2d(4 * cin, cout, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pixel_unshuffle(x, 2)  # (N, 4 cin, H/2, W/2)
        n, c, h, w = x.shape
        return self.conv(x) + x.reshape(n, self.cout, c // self.cout, h, w).mean(2)


class ChannelToSpace(nn.Module):
    """Up 2x with a parameter-free shortcut (DC-AE): a conv to 4 cout channels, channel-to-space,
    plus the input's channels repeated to 4 cout, channel-to-space. (N, cin, H, W) -> (N, cout, 2H, 2W)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.repeats = 4 * cout // cin
        self.conv = nn.Conv2d(cin, 4 * cout, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(self.conv(x) + x.repeat_interleave(self.repeats, dim=1), 2)


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(8 if c % 8 == 0 else 1, c)


class DCEncoder(nn.Module):
    """Encoder with space-to-channel stages, every layer at 1/2 resolution or less:
    (N, T4, 3, H, W) -> (N, C, H/8, W/8)."""

    def __init__(self, c: AutoencoderConfig) -> None:
        super().__init__()
        f, w, t = c.frame_width, c.width, c.time_factor
        self.stem = nn.Conv2d(12, f, 3, padding=1)  # per frame, on the space-to-channel pixels
        self.tower = nn.Sequential(
            nn.Conv2d(t * f, w, 3, padding=1), *_stage(w, c.blocks),  # 1/2
            SpaceToChannel(w, w), *_stage(w, c.blocks),  # 1/4
            SpaceToChannel(w, w), *_stage(w, c.blocks),  # 1/8
            _norm(w), nn.SiLU(),
        )  # fmt: skip
        self.out = nn.Conv2d(w, c.latent_channels, 3, padding=1)
        self.latent_channels = c.latent_channels

    def forward(self, groups: Tensor) -> Tensor:
        n, t, _, h, w = groups.shape
        x = self.stem(F.pixel_unshuffle(groups.reshape(n * t, 3, h, w), 2))  # (N*T4, f, H/2, W/2)
        x = self.tower(x.reshape(n, t * x.shape[1], h // 2, w // 2))  # (N, w, H/8, W/8)
        c = self.latent_channels
        shortcut = x[:, : (x.shape[1] // c) * c].reshape(n, c, -1, h // 8, w // 8).mean(2)
        return self.out(x) + shortcut


class DCDecoder(nn.Module):
    """Decoder with channel-to-space stages and a per-frame channel-to-space output:
    (N, 2C, h, w) = [latent, previous latent] -> (N, T4, 3, 8h, 8w)."""

    def __init__(self, c: AutoencoderConfig) -> None:
        super().__init__()
        f, w, t = c.frame_width, c.width, c.time_factor
        self.time_factor = t
        self.inp = nn.Conv2d(2 * c.latent_channels, w, 3, padding=1)
        self.repeats = w // c.latent_channels
        self.tower = nn.Sequential(
            *_stage(w, c.blocks),  # 1/8
            ChannelToSpace(w, w), *_stage(w, c.blocks),  # 1/4
            ChannelToSpace(w, w), *_stage(w, c.blocks),  # 1/2
            _norm(w), nn.SiLU(), nn.Conv2d(w, t * f, 3, padding=1),
        )  # fmt: skip
        self.tail = nn.Sequential(*_stage(f, c.blocks), _norm(f), nn.SiLU(), nn.Conv2d(f, 12, 3, padding=1))

    def forward(self, pair: Tensor) -> Tensor:
        n, c2, h, w = pair.shape
        z = pair[:, : c2 // 2]
        x = self.inp(pair) + z.repeat_interleave(self.repeats, dim=1)  # (N, w', h, w): shortcut
        x = self.tower(x)  # (N, T4*f, 4h, 4w)
        t = self.time_factor
        x = self.tail(x.reshape(n * t, x.shape[1] // t, 4 * h, 4 * w))  # (N*T4, 12, 4h, 4w)
        return F.pixel_shuffle(x, 2).reshape(n, t, 3, 8 * h, 8 * w)


class VideoAutoencoder(nn.Module):
    """Video (B, 3, F, H, W) <-> latents (B, C, T, H/8, W/8) with F = 1 + 4 (T - 1), unscaled."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        dc = config.style == "dc"
        self.encoder = DCEncoder(config) if dc else Encoder(config)
        self.decoder = DCDecoder(config) if dc else Decoder(config)

    def groups(self, pixels: Tensor) -> Tensor:
        """(B, 3, F, H, W) -> (B, T, T4, 3, H, W): the first frame repeated T4 times, then groups."""
        b, _, f, h, w = pixels.shape
        t4 = self.config.time_factor
        if (f - 1) % t4:
            raise ValueError(f"a causal video of 1 + {t4} k frames is needed, got {f} frames")
        x = pixels.transpose(1, 2)  # (B, F, 3, H, W)
        x = torch.cat([x[:, :1].expand(b, t4 - 1, 3, h, w), x], dim=1)  # (B, T*T4, 3, H, W)
        return x.reshape(b, -1, t4, 3, h, w)

    def encode(self, pixels: Tensor) -> Tensor:
        """(B, 3, F, H, W) -> (B, C, T, h, w)."""
        g = self.groups(pixels)
        b, t = g.shape[:2]
        z = self.encoder(g.flatten(0, 1))  # (B*T, C, h, w)
        return z.reshape(b, t, *z.shape[1:]).transpose(1, 2)

    def decode_groups(self, latents: Tensor) -> Tensor:
        """(B, C, T, h, w) -> (B, T, T4, 3, H, W): every latent's group, unclamped."""
        b, t = latents.shape[0], latents.shape[2]
        z = latents.transpose(1, 2)  # (B, T, C, h, w)
        prev = torch.cat([z[:, :1], z[:, :-1]], dim=1)  # the first latent is its own context
        y = self.decoder(torch.cat([z, prev], dim=2).flatten(0, 1))  # (B*T, T4, 3, H, W)
        return y.reshape(b, t, *y.shape[1:])

    def decode(self, latents: Tensor) -> Tensor:
        """(B, C, T, h, w) -> (B, 3, 1 + T4 (T - 1), H, W): latent 0's last frame, then the groups."""
        y = self.decode_groups(latents)  # (B, T, T4, 3, H, W)
        frames = torch.cat([y[:, 0, -1:], y[:, 1:].flatten(1, 2)], dim=1)  # (B, F, 3, H, W)
        return frames.transpose(1, 2)


class AutoencoderCodec:
    """`Codec` over a trained `VideoAutoencoder` (causal, `time_factor` 4, `space_factor` 8).

    Decoding is deterministic and every group depends only on its latent and the one before, so
    a video decoded in whole runs equals one decoded latent by latent."""

    left_context = 1  # decoding latent t reads latents t - 1 and t (framepack.writer)

    def __init__(
        self,
        model: VideoAutoencoder,
        scaling_factor: float = 1.0,
        path: str | None = None,
        card: dict[str, Any] | None = None,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.scaling_factor = float(scaling_factor)
        self.path = path
        self.card = dict(card or {})
        self.latent_channels = model.config.latent_channels
        self.space_factor = model.config.space_factor
        self.time_factor = model.config.time_factor

    def encode(self, pixels: Tensor) -> Tensor:
        """(B, 3, F, H, W) in [-1, 1], F = 1 + 4k -> (B, C, T, H/8, W/8), about unit variance."""
        _, _, _, h, w = pixels.shape
        if h % self.space_factor or w % self.space_factor:
            raise ValueError(f"height and width must be multiples of {self.space_factor}, got {h}x{w}")
        with torch.no_grad():
            z = self.model.encode(pixels.to(self._dtype()))
        return (z * self.scaling_factor).to(pixels.dtype)

    def decode(self, latents: Tensor) -> Tensor:
        """(B, C, T, h, w) -> (B, 3, 1 + 4 (T - 1), 8h, 8w), clamped to [-1, 1]."""
        with torch.no_grad():
            x = self.model.decode(latents.to(self._dtype()) / self.scaling_factor)
        return x.clamp(-1, 1).to(latents.dtype)

    def num_frames(self, latent_frames: int) -> int:
        return causal_num_frames(latent_frames, self.time_factor)

    def num_latents(self, frames: int) -> int:
        return causal_num_latents(frames, self.time_factor)

    def config(self) -> dict[str, Any]:
        return {"kind": KIND, "path": self.path, "scaling_factor": self.scaling_factor}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AutoencoderCodec:
        if not config.get("path"):
            raise UserError(
                "this codec config names no autoencoder folder; train one with framepack codec train"
            )
        return cls.load(config["path"])

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def save(self, directory: str | os.PathLike) -> None:
        """Write `config.json` and `model.safetensors` into `directory` (weights in their dtype).
        `path` is left as it is: set it where the saved folder should be the one `config()` names."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": KIND,
            **asdict(self.model.config),
            "scaling_factor": self.scaling_factor,
            "card": self.card,
        }
        weights = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(weights, str(out / WEIGHTS_NAME))
        (out / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> AutoencoderCodec:
        """Load a folder written by `save`; the weights are cast to float32 (UserError if damaged)."""
        folder = Path(directory)
        if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
            raise UserError(f"no autoencoder in {folder} (need {CONFIG_NAME} and {WEIGHTS_NAME})")
        try:
            meta = json.loads((folder / CONFIG_NAME).read_text())
            config = AutoencoderConfig(
                **{k: meta[k] for k in AutoencoderConfig.__dataclass_fields__ if k in meta}
            )
            model = VideoAutoencoder(config)
            state = {k: v.float() for k, v in load_file(str(folder / WEIGHTS_NAME)).items()}
            model.load_state_dict(state)
        except Exception as err:  # json, safetensors and torch raise their own types for a damaged file
            raise UserError(
                f"{folder}: the autoencoder is damaged ({err}); retrain or re-export it"
            ) from None
        return cls(model, meta.get("scaling_factor", 1.0), str(folder), meta.get("card"))
