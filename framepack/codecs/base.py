"""The codec contract: pixels <-> latents.

CONTRACT (shared by the pipeline, training and evaluation code; keep these names):

- pixels are `(B, 3, F, H, W)` float in `[-1, 1]`; latents are `(B, C, T, h, w)`.
- A causal video codec (like the HunyuanVideo VAE, 4x in time) maps `F = 1 + time_factor * (T - 1)`
  pixel frames to `T` latent frames: the first latent holds only the first frame.
- `config()` is a JSON-serialisable dict saved with a checkpoint; `codec_from_config` rebuilds the
  codec from it (the `"kind"` entry picks the implementation).
- A codec whose decoder is causal in time across latents (the HunyuanVideo VAE) sets the class
  attribute `crossfade_decode = True`: a video is then decoded window by window and cross-faded
  as the official demo does (framepack.writer); other codecs are decoded in whole runs, and
  incrementally when decoding latent t reads latents t - 1 and t only (`left_context = 1`).
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Codec(Protocol):
    """Maps pixels to latents and back.

    latent_channels: C, the channels of a latent frame.
    time_factor:     pixel frames per latent frame (after the first, causal latent).
    space_factor:    pixels per latent pixel along each of H and W.
    """

    latent_channels: int
    time_factor: int
    space_factor: int

    def encode(self, pixels: Tensor) -> Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> (B, C, T, H / space_factor, W / space_factor)."""
        ...

    def decode(self, latents: Tensor) -> Tensor:
        """(B, C, T, h, w) -> (B, 3, num_frames(T), h * space_factor, w * space_factor)."""
        ...

    def num_frames(self, latent_frames: int) -> int:
        """Pixel frames decoded from `latent_frames` latent frames."""
        ...

    def num_latents(self, frames: int) -> int:
        """The fewest latent frames whose decoding covers `frames` pixel frames."""
        ...

    def config(self) -> dict[str, Any]:
        """A JSON-serialisable description; `codec_from_config(codec.config())` rebuilds it."""
        ...


def decodes_in_windows(codec: Any) -> bool:
    """Whether `codec` is decoded section by section with the official cross-fade
    (its `crossfade_decode` attribute; False when it has none)."""
    return bool(getattr(codec, "crossfade_decode", False))


def has_left_context(codec: Any) -> bool:
    """Whether decoding latents [a - 1, b) and dropping latent a - 1's frame gives exactly the
    frames of latents [a, b) in a whole decode (class attribute `left_context = 1`: decoding
    latent t reads latents t - 1 and t only); the writer then decodes growing runs incrementally."""
    return getattr(codec, "left_context", None) == 1


def causal_num_frames(latent_frames: int, time_factor: int) -> int:
    """Pixel frames of a causal codec: the first latent is one frame, each later one `time_factor`."""
    if latent_frames < 1:
        raise ValueError(f"latent_frames must be >= 1, got {latent_frames}")
    return 1 + time_factor * (latent_frames - 1)


def causal_num_latents(frames: int, time_factor: int) -> int:
    """The fewest latent frames `T` with `causal_num_frames(T) >= frames` (exact for 1 + t*(T-1))."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    return 1 + -(-(frames - 1) // time_factor)


# kind -> "module:factory"; each factory takes the config dict. Imported only when asked for, so a
# codec with heavy dependencies (the HunyuanVideo VAE) costs nothing until it is used.
CODEC_KINDS: dict[str, str] = {
    "pixel": "framepack.codecs.pixel:PixelCodec.from_config",
    "autoencoder": "framepack.codecs.autoencoder:AutoencoderCodec.from_config",
    "hunyuan-vae": "framepack.hunyuan.vae:HunyuanVideoVAE.from_config",
}


def codec_from_config(config: dict[str, Any]) -> Codec:
    """Rebuild a codec from `Codec.config()`; `config["kind"]` must be one of `CODEC_KINDS`."""
    kind = config.get("kind")
    if kind not in CODEC_KINDS:
        raise ValueError(f"codec config 'kind' must be one of {sorted(CODEC_KINDS)}, got {kind!r}")
    module_name, attr_path = CODEC_KINDS[kind].split(":")
    factory: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        factory = getattr(factory, attr)
    return factory(config)


def psnr(reference: Tensor, estimate: Tensor) -> float:
    """Peak signal-to-noise ratio in dB of pixels in [-1, 1] (peak-to-peak 2); inf when equal."""
    mse = torch.mean((reference.double() - estimate.double()) ** 2).item()
    return math.inf if mse == 0.0 else 10.0 * math.log10(4.0 / mse)
