"""Training data: the procedural world (data whose truth is known) and video-folder datasets.

Import from the submodules (`framepack.data.world`, `framepack.data.world_script`,
`framepack.data.world_clips`, `framepack.data.videos`); the names below are re-exported lazily
so `import framepack.data` stays free of torch and PyAV imports.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PALETTE": "world",
    "World": "world",
    "WorldConfig": "world",
    "WorldObject": "world",
    "Clip": "world",
    "render_clip": "world",
    "Action": "world_script",
    "Script": "world_script",
    "SPEEDS": "world_script",
    "random_script": "world_script",
    "parse_script": "world_script",
    "camera_path": "world_script",
    "caption_timeline": "world_script",
    "caption_at": "world_script",
    "format_timeline": "world_script",
    "WorldClips": "world_clips",
    "SPLITS": "world_clips",
    "VideoFolder": "videos",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'framepack.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"framepack.data.{_EXPORTS[name]}"), name)
