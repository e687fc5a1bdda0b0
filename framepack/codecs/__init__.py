"""Pixels <-> latents: the `Codec` protocol and the small model's lossless `PixelCodec`.

See docs/codecs.md. `codec_from_config(codec.config())` rebuilds any registered codec. The names
below are re-exported lazily (so `python -m framepack.codecs.pixel` runs cleanly).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Codec": "base",
    "codec_from_config": "base",
    "psnr": "base",
    "PixelCodec": "pixel",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'framepack.codecs' has no attribute {name!r}")
    return getattr(importlib.import_module(f"framepack.codecs.{_EXPORTS[name]}"), name)
