"""Pixels <-> latents: the `Codec` protocol and the small model's lossless `PixelCodec`.

See docs/codecs.md. `codec_from_config(codec.config())` rebuilds any registered codec.
"""

from framepack.codecs.base import Codec, codec_from_config, psnr
from framepack.codecs.pixel import PixelCodec

__all__ = ["Codec", "PixelCodec", "codec_from_config", "psnr"]
