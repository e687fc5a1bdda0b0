"""The HunyuanVideo VAE as a `Codec`, and the official cross-fade of decoded windows.

The VAE (`hunyuanvideo-community/HunyuanVideo/vae`) is causal: 4x in time, 8x in space, 16
channels; k latent frames decode to 4k - 3 pixel frames (the first latent holds one frame).
Latents are scaled by `config.scaling_factor` (0.476986) after encoding and unscaled before
decoding, as in the official demo and diffusers' `HunyuanVideoFramepackPipeline`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from framepack.codecs.base import causal_num_frames, causal_num_latents
from framepack.errors import UserError
from framepack.hunyuan.paths import HUNYUAN_VIDEO, check_part, offline

if TYPE_CHECKING:
    from diffusers import AutoencoderKLHunyuanVideo


def default_device() -> torch.device:
    """cuda if available, else cpu."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class HunyuanVideoVAE:
    """`Codec` over diffusers' `AutoencoderKLHunyuanVideo`.

    tiling:  decode/encode in overlapping spatial tiles (less memory, official low-VRAM default).
    slicing: one batch row at a time.
    """

    crossfade_decode = True  # causal in time: decoded window by window (framepack.writer)

    time_factor = 4
    space_factor = 8

    def __init__(
        self,
        vae: AutoencoderKLHunyuanVideo,
        *,
        tiling: bool = False,
        slicing: bool = False,
        source: str | None = None,
    ) -> None:
        self.vae = vae.eval().requires_grad_(False)
        self.source = source
        self.latent_channels = int(vae.config.latent_channels)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.time_factor = int(vae.config.temporal_compression_ratio)
        self.space_factor = int(vae.config.spatial_compression_ratio)
        self.set_tiling(tiling)
        self.set_slicing(slicing)

    @classmethod
    def from_dir(
        cls,
        hunyuan_dir: str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float16,
        tiling: bool = False,
        slicing: bool = False,
    ) -> HunyuanVideoVAE:
        """Load `hunyuan_dir/vae` (released dtype fp16; pass torch.float32 for full precision)."""
        from diffusers import AutoencoderKLHunyuanVideo

        folder = check_part(Path(hunyuan_dir), HUNYUAN_VIDEO, "vae")
        with offline():
            try:
                vae = AutoencoderKLHunyuanVideo.from_pretrained(
                    folder, torch_dtype=dtype, local_files_only=True, use_safetensors=True
                )
            except (OSError, ValueError, KeyError) as err:
                raise UserError(f"could not load the HunyuanVideo VAE from {folder}: {err}") from err
        vae.to(device or default_device())
        return cls(vae, tiling=tiling, slicing=slicing, source=str(Path(hunyuan_dir)))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HunyuanVideoVAE:
        """Rebuild from `config()`: reloads the VAE from its recorded folder."""
        if not config.get("path"):
            raise UserError("this checkpoint's codec is the HunyuanVideo VAE but no VAE folder is recorded")
        dtype = getattr(torch, str(config.get("dtype", "float16")))
        return cls.from_dir(
            config["path"],
            dtype=dtype,
            tiling=bool(config.get("tiling")),
            slicing=bool(config.get("slicing")),
        )

    def config(self) -> dict[str, Any]:
        return {
            "kind": "hunyuan-vae",
            "path": self.source,
            "dtype": str(self.dtype).removeprefix("torch."),
            "tiling": self.vae.use_tiling,
            "slicing": self.vae.use_slicing,
        }

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def set_tiling(self, enabled: bool) -> None:
        if enabled:
            self.vae.enable_tiling()
        else:
            self.vae.disable_tiling()

    def set_slicing(self, enabled: bool) -> None:
        self.vae.use_slicing = bool(enabled)

    @torch.no_grad()
    def encode(self, pixels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> scaled latents (B, 16, (F - 1) // 4 + 1, H / 8, W / 8), float32.

        With `generator`, a sample of the posterior (what the official demo and diffusers do,
        the official demo with the global RNG); without, its mean (deterministic).
        """
        if pixels.ndim != 5 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be (B, 3, F, H, W), got {tuple(pixels.shape)}")
        dist = self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
        latents = dist.sample(generator=generator) if generator is not None else dist.mode()
        return (latents * self.scaling_factor).float()

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents (B, 16, T, h, w) -> pixels (B, 3, 4T - 3, 8h, 8w), float32, about [-1, 1].

        Not clamped: the decoder can overshoot [-1, 1], and the official demo cross-fades the
        decoded windows before it clamps (when writing). Consumers that need [-1, 1] clamp.
        """
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"latents must be (B, {self.latent_channels}, T, h, w), got {tuple(latents.shape)}"
            )
        z = (latents / self.scaling_factor).to(self.device, self.dtype)
        return self.vae.decode(z).sample.float()

    def num_frames(self, latent_frames: int) -> int:
        return causal_num_frames(latent_frames, self.time_factor)

    def num_latents(self, frames: int) -> int:
        return causal_num_latents(frames, self.time_factor)


def overlap_frames(window: int, time_factor: int = 4) -> int:
    """Frames cross-faded between decoded windows: time_factor * window - 3 (33 for w = 9)."""
    return causal_num_frames(window, time_factor)
