"""The SigLIP image encoder (`lllyasviel/flux_redux_bfl`): image features for the transformer.

The official demo feeds SigLIP's `last_hidden_state` (B, 729, 1152) of the start image to the
transformer's image projection. It hands the processor the uint8 image; we get pixels in [-1, 1]
(`x / 127.5 - 1` of that image), so we map them back to uint8 with rounding, which recovers the
image exactly, and preprocess as the official demo. Diffusers' pipeline instead hands the
processor floats in [0, 1], which it truncates to uint8 for resizing: 63 of the 256 levels come
out one lower (docs/hunyuan.md, Fidelity).

End frame (not in the official demo; from FramePack PR #167, diffusers and the forks): the end
image's features are averaged with the start image's (`framepack.conditioning.mix_image_embeds`, weight 0.5), and its
VAE latent is the clean "post" frame of the first inverted section (see docs/hunyuan.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from framepack.errors import UserError
from framepack.hunyuan.paths import FLUX_REDUX, check_part, offline
from framepack.hunyuan.vae import default_device


class SiglipImageEncoder:
    """images (B, 3, H, W) in [-1, 1] -> features (B, N, D) (released: N = 729, D = 1152)."""

    def __init__(self, image_encoder: Any, feature_extractor: Any) -> None:
        self.image_encoder = image_encoder.eval().requires_grad_(False)
        self.feature_extractor = feature_extractor
        self.execution_device: torch.device | None = None  # where it computes when streamed

    @classmethod
    def from_dir(
        cls,
        redux_dir: str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float16,
    ) -> SiglipImageEncoder:
        """Load image_encoder + feature_extractor from a flux_redux_bfl folder (released dtype fp16)."""
        from transformers import SiglipImageProcessor, SiglipVisionModel

        root = Path(redux_dir)
        encoder_dir = check_part(root, FLUX_REDUX, "image_encoder")
        extractor_dir = check_part(root, FLUX_REDUX, "feature_extractor")
        with offline():
            try:
                extractor = SiglipImageProcessor.from_pretrained(extractor_dir, local_files_only=True)
                model = SiglipVisionModel.from_pretrained(
                    encoder_dir, torch_dtype=dtype, local_files_only=True, use_safetensors=True
                )
            except (OSError, ValueError, KeyError) as err:
                raise UserError(f"could not load the SigLIP image encoder from {root}: {err}") from err
        return cls(model.to(device or default_device()), extractor)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the execution device when streamed (low-VRAM), else the weights'."""
        return self.execution_device or next(self.image_encoder.parameters()).device

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) or (B, 3, 1, H, W) in [-1, 1] -> last_hidden_state (B, N, D)."""
        if images.ndim == 5:
            images = images[:, :, 0]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        inputs = self.feature_extractor(images=to_uint8_images(images), return_tensors="pt").to(
            device=self.device, dtype=self.image_encoder.dtype
        )
        return self.image_encoder(**inputs).last_hidden_state

    def modules(self) -> list[torch.nn.Module]:
        return [self.image_encoder]


def to_uint8_images(images: Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) in [-1, 1] -> B arrays (H, W, 3) uint8, rounded: what the official demo encodes.

    Rounding inverts `x / 127.5 - 1` exactly; truncation (what the image processor does to float
    input) puts about a quarter of the levels one lower.
    """
    levels = ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return list(levels.permute(0, 2, 3, 1).numpy())
