"""The latent cache of a LoRA training set: encode once, train without the encoders.

A data folder holds videos (mp4, webm, mov, mkv) and images (png, jpg, jpeg, webp, bmp), each
with a caption file of the same stem (`clip.mp4` + `clip.txt`). `build_cache` reads each file,
maps it to the nearest released resolution bucket (`framepack.hunyuan.buckets`, 640 by default),
resizes and centre-crops it, and stores per clip one safetensors file:

    latents       (16, 1 + n, H/8, W/8)  HunyuanVideo VAE latents (scaled), the start frame first
    text_states   (L, 4096)              LLaMA states of the caption, valid tokens only
    pooled        (768,)                 CLIP-L pooled vector
    image_embeds  (729, 1152)            SigLIP features of the clip's first frame

A video gives up to `clips_per_video` consecutive clips of `1 + 4 n` frames at `fps` (n =
`clip_latents`, or fewer when the video is shorter; below one latent after the start frame it is
skipped and reported). An image gives a still clip of `image_latents` latents (the image
repeated), for style and subject LoRAs. `index.json` lists the clips; files are named by a hash
of (source path, size, modification time, caption, settings), so re-running the cache step
encodes only new or changed files and deletes the files of removed ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from framepack.errors import UserError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
INDEX = "index.json"
VERSION = 1


@dataclass(frozen=True)
class CacheSettings:
    """bucket: resolution bucket (pixels of the side of a square of the same area, multiple of 16);
    fps: frames per second clips are resampled to (released: 30); clip_latents: latents after the
    start frame per video clip (18 = two released sections); image_latents: the same for an
    image's still clip; clips_per_video: consecutive clips taken from each video;
    default_caption: for files without a caption file (None: such files are an error)."""

    bucket: int = 640
    fps: float = 30.0
    clip_latents: int = 18
    image_latents: int = 9
    clips_per_video: int = 1
    default_caption: str | None = None

    def __post_init__(self) -> None:
        if self.bucket < 16 or self.bucket % 16:
            raise ValueError(f"bucket must be a positive multiple of 16, got {self.bucket}")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        for name in ("clip_latents", "image_latents", "clips_per_video"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class SourceItem:
    """A file of the data folder: kind "video" or "image", and its caption."""

    path: Path
    kind: str
    caption: str


@dataclass(frozen=True)
class CacheEntry:
    """One cached clip: its file (relative to the cache folder), source and shape."""

    file: str
    source: str
    caption: str
    start: float  # seconds into the source
    height: int
    width: int
    latents: int  # latent frames, the start frame included


@dataclass
class CachedClip:
    """A clip read back: latents (C, 1 + n, h, w), text_states (L, D_text), pooled (D_pool,),
    image_embeds (N, D_img), all float32 on the CPU."""

    latents: Tensor
    text_states: Tensor
    pooled: Tensor
    image_embeds: Tensor
    caption: str = ""


class Encoders(Protocol):
    """What the cache step needs: a codec (`encode` (1, 3, F, H, W) -> (1, C, T, h, w)), a prompt
    encoder (`encode([text])` -> PromptEmbeds) and an image encoder ((1, 3, H, W) -> (1, N, D))."""

    codec: Any
    prompt_encoder: Any
    image_encoder: Callable[[Tensor], Tensor]


@dataclass
class HunyuanEncoders:
    """The released encoders: HunyuanVideo VAE, LLaMA + CLIP-L, SigLIP (flux_redux_bfl)."""

    codec: Any
    prompt_encoder: Any
    image_encoder: Callable[[Tensor], Tensor]
    sources: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dir(
        cls, model_dir: str | Path | None, device: str = "auto", dtype: str = "auto", tiling: bool = False
    ) -> HunyuanEncoders:
        """Find `hunyuanvideo-community/HunyuanVideo` and `lllyasviel/flux_redux_bfl` under
        `model_dir` (or the Hugging Face cache) and load them (no transformer needed)."""
        from framepack.components import LoadOptions
        from framepack.hunyuan.components import dtypes
        from framepack.hunyuan.image import SiglipImageEncoder
        from framepack.hunyuan.paths import FLUX_REDUX, HUNYUAN_VIDEO, _default_cache_roots, find
        from framepack.hunyuan.text import HunyuanPromptEncoder
        from framepack.hunyuan.vae import HunyuanVideoVAE

        torch_device = LoadOptions(device=device).torch_device()
        roots = [Path(model_dir)] if model_dir is not None else _default_cache_roots()
        hunyuan, redux = find(HUNYUAN_VIDEO, roots), find(FLUX_REDUX, roots)
        _, encoder_dtype = dtypes(dtype, torch_device)
        return cls(
            codec=HunyuanVideoVAE.from_dir(hunyuan, device=torch_device, dtype=encoder_dtype, tiling=tiling),
            prompt_encoder=HunyuanPromptEncoder.from_dir(hunyuan, device=torch_device, dtype=encoder_dtype),
            image_encoder=SiglipImageEncoder.from_dir(redux, device=torch_device, dtype=encoder_dtype).encode,
            sources={"hunyuan": str(hunyuan), "redux": str(redux), "dtype": str(encoder_dtype)},
        )


# ----------------------------------------------------------------------------- the data folder


def scan_data(root: str | Path, default_caption: str | None = None) -> list[SourceItem]:
    """The videos and images under `root` (recursively, sorted), with their captions.

    Raises UserError when the folder is missing or empty, or files lack a caption file and no
    default caption is given (the count and the first such file are named).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"data folder {root} does not exist; give a folder of videos/images with .txt captions"
        )
    items, uncaptioned = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        suffix = path.suffix.lower()
        kind = "video" if suffix in VIDEO_EXTENSIONS else "image" if suffix in IMAGE_EXTENSIONS else None
        if kind is None:
            continue
        sidecar = path.with_suffix(".txt")
        caption = sidecar.read_text(encoding="utf-8").strip() if sidecar.is_file() else default_caption
        if caption is None:
            uncaptioned.append(path)
            continue
        items.append(SourceItem(path, kind, caption))
    if uncaptioned:
        raise UserError(
            f"{len(uncaptioned)} files have no caption file (e.g. {uncaptioned[0]} needs "
            f"{uncaptioned[0].with_suffix('.txt').name}); add them or pass --default-caption"
        )
    if not items:
        raise UserError(
            f"no video ({', '.join(VIDEO_EXTENSIONS)}) or image ({', '.join(IMAGE_EXTENSIONS)}) under {root}"
        )
    return items


def clips_of(
    item: SourceItem, settings: CacheSettings, time_factor: int = 4
) -> Iterator[tuple[float, np.ndarray]]:
    """(start seconds, uint8 frames (1 + t n, H, W, 3)) of each clip of `item`, in its bucket.

    Raises UserError for an unreadable file; a video too short for one latent after its start
    frame yields nothing.
    """
    from framepack.hunyuan.buckets import nearest_bucket
    from framepack.video import read_image, resize_center_crop

    if item.kind == "image":
        image = read_image(item.path)
        bucket = nearest_bucket(image.shape[0], image.shape[1], settings.bucket)
        still = resize_center_crop(image, *bucket)
        yield 0.0, np.repeat(still[None], 1 + time_factor * settings.image_latents, axis=0)
        return
    from framepack.data.videos import VideoInfo, probe, read_clip

    try:
        found = probe(item.path)
    except Exception as err:  # PyAV raises many error types for damaged files
        raise UserError(
            f"cannot read {item.path} as a video ({type(err).__name__}); remove or re-encode it"
        ) from None
    if found is None:
        raise UserError(f"{item.path} has no decodable frame; remove or re-encode it")
    info = VideoInfo(
        item.path, found.width, found.height, found.fps, found.first_time, found.last_time, item.caption
    )
    frames_available = math.floor(info.span * settings.fps + 1e-6) + 1
    per_clip = min(settings.clip_latents, (frames_available - 1) // time_factor)
    if per_clip < 1:
        log.warning(
            "skipping %s: %.2f s is shorter than one latent after the start frame", item.path, info.span
        )
        return
    frames = 1 + time_factor * per_clip
    bucket = nearest_bucket(info.height, info.width, settings.bucket)
    for k in range(settings.clips_per_video):
        start = k * frames / settings.fps
        if k and start + (frames - 1) / settings.fps > info.span + 1e-6:
            break
        yield start, read_clip(info, start, frames, settings.fps, bucket)


@torch.no_grad()
def encode_clip(encoders: Encoders, frames: np.ndarray, caption: str) -> dict[str, Tensor]:
    """uint8 frames (F, H, W, 3) and a caption -> the tensors of one cache file (see module doc)."""
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1.0
    latents = encoders.codec.encode(pixels[None])[0]  # (C, 1 + n, h, w)
    prompt = encoders.prompt_encoder.encode([caption])
    states = prompt.states[0][prompt.mask[0].to(prompt.states.device)]  # (L_valid, D)
    image = encoders.image_encoder(pixels[None, :, 0])[0]  # (N, D_img)
    return {
        "latents": latents.contiguous().cpu(),
        "text_states": states.contiguous().cpu(),
        "pooled": prompt.pooled[0].contiguous().cpu(),
        "image_embeds": image.contiguous().cpu(),
    }


# ----------------------------------------------------------------------------- building


def _clip_key(item: SourceItem, start: float, settings: CacheSettings, encoder: dict[str, str]) -> str:
    stat = item.path.stat()
    fields = [
        str(item.path.resolve()),
        stat.st_size,
        stat.st_mtime_ns,
        item.caption,
        start,
        asdict(settings),
        encoder,
    ]
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def build_cache(
    data_dir: str | Path,
    cache_dir: str | Path,
    encoders: Encoders,
    settings: CacheSettings = CacheSettings(),
    progress: bool = True,
) -> list[CacheEntry]:
    """Encode every clip of `data_dir` into `cache_dir` (see the module docstring); returns the index.

    Clips already cached with the same source, caption and settings are kept, not re-encoded.
    """
    from safetensors.torch import safe_open, save
    from tqdm import tqdm

    from framepack.train.checkpoint import atomic_write_bytes, atomic_write_json

    cache = Path(cache_dir)
    (cache / "clips").mkdir(parents=True, exist_ok=True)
    items = scan_data(data_dir, settings.default_caption)
    encoder_info = dict(getattr(encoders, "sources", {}) or {})
    time_factor = int(getattr(encoders.codec, "time_factor", 4))
    entries, skipped = [], []
    for item in tqdm(items, unit="file", disable=not progress):
        before = len(entries)
        for start, frames in clips_of(item, settings, time_factor):
            name = f"clips/{_clip_key(item, start, settings, encoder_info)}.safetensors"
            if not (cache / name).is_file():
                tensors = encode_clip(encoders, frames, item.caption)
                atomic_write_bytes(
                    cache / name, save(tensors, {"source": str(item.path), "caption": item.caption})
                )
            with safe_open(cache / name, "pt") as f:
                shape = f.get_slice("latents").get_shape()
            h, w = frames.shape[1:3]
            entries.append(CacheEntry(name, str(item.path), item.caption, start, h, w, int(shape[1])))
        if len(entries) == before:
            skipped.append(str(item.path))
    if not entries:
        raise UserError(
            f"no clip could be made from {data_dir}: every video is shorter than 5 frames at {settings.fps} fps"
        )
    keep = {e.file for e in entries}
    for stale in (cache / "clips").glob("*.safetensors"):
        if f"clips/{stale.name}" not in keep:
            stale.unlink()
    index = {
        "version": VERSION,
        "settings": asdict(settings),
        "encoders": encoder_info,
        "skipped": skipped,
        "clips": [asdict(e) for e in entries],
    }
    atomic_write_json(cache / INDEX, index)
    return entries


# ----------------------------------------------------------------------------- reading


class LatentCache:
    """The clips of a cache folder written by `build_cache`; `cache[i]` reads clip i (float32)."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.root = Path(cache_dir)
        path = self.root / INDEX
        if not path.is_file():
            raise UserError(
                f"{self.root} is not a latent cache (no {INDEX}); run `framepack lora cache` first"
            )
        try:
            index = json.loads(path.read_text())
            self.settings = CacheSettings(**index["settings"])
            self.entries = [CacheEntry(**c) for c in index["clips"]]
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"{path} is damaged ({type(err).__name__}: {err}); rebuild the cache") from None
        if index.get("version") != VERSION:
            raise UserError(
                f"{path} is cache version {index.get('version')}, this framepack reads {VERSION}; rebuild it"
            )
        if not self.entries:
            raise UserError(f"{path} lists no clips; rebuild the cache from a folder with videos or images")

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> CachedClip:
        from safetensors.torch import load_file

        entry = self.entries[index]
        try:
            t = load_file(self.root / entry.file)
        except (OSError, ValueError) as err:
            raise UserError(
                f"cache file {self.root / entry.file} cannot be read ({err}); rebuild the cache"
            ) from None
        return CachedClip(
            t["latents"].float(),
            t["text_states"].float(),
            t["pooled"].float(),
            t["image_embeds"].float(),
            entry.caption,
        )

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the first clip's tensors (to check them against a transformer)."""
        clip = self[0]
        return {
            k: tuple(getattr(clip, k).shape) for k in ("latents", "text_states", "pooled", "image_embeds")
        }
