"""A model bundle: everything the pipeline needs to generate with a trained small model.

Directory layout (the bundled demo model lives in `framepack/assets/demo/`):

    framepack.json                 format, fps, frame size, window, schedule, sampling defaults,
                                   layouts trained, model card, training summary
    codec.json                     `Codec.config()`; rebuilt with `codec_from_config`
    codec/{config.json, model.safetensors}   a learned codec's weights (the autoencoder), named
                                   in codec.json by a path relative to the bundle
    transformer/config.json        diffusers-format `PackedTransformer` (`from_pretrained`)
    transformer/diffusion_pytorch_model.safetensors
    text_encoder/{vocab.json, config.json, model.safetensors}   the `VocabEncoder`
    history_codebook.safetensors   the history codebook (K, C) when trained with
                                   `--discretize-history K` (framepack.discretize); meta
                                   `history_codebook: K`, so generation applies it unasked
    README.md                      the model card as prose (optional)

`load_bundle(path) -> Bundle` rebuilds the three modules; `save_bundle` writes them. No pickles:
tensors in safetensors, everything else in JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from framepack.codecs.base import Codec, codec_from_config
from framepack.discretize import Codebook
from framepack.disk import writing
from framepack.errors import UserError
from framepack.models import PackedTransformer
from framepack.options import SAMPLERS
from framepack.packing import parse_schedule
from framepack.sampling import PREDICTIONS
from framepack.text.vocab import VocabEncoder

FORMAT = "framepack-bundle"
VERSION = 1
META_NAME = "framepack.json"
CODEC_NAME = "codec.json"
CODEC_DIR = "codec"
TRANSFORMER_DIR = "transformer"
TEXT_DIR = "text_encoder"
CODEBOOK_NAME = "history_codebook.safetensors"


@dataclass(frozen=True)
class BundleMeta:
    """The generation settings stored in `framepack.json`.

    fps:          frames per second the model was trained at.
    height, width: frame size in pixels.
    window:       latent frames per generated section (codec.num_frames(window) pixel frames).
    schedule:     the packing schedule spec (`framepack.packing.parse_schedule`).
    anchors:      what sits uncompressed in the 1x level besides history ("start": the start frame).
    pad:          how missing history is filled ("zeros", like the released history buffer).
    layouts:      sampling layouts the model was trained for ("forward", "inverted", "endpoints").
    default_plan: the plan `framepack generate` uses by default.
    steps, shift, sampler: sampling defaults (flow-matching steps, time shift, sampler name:
                  "unipc", or "euler" for a few-step distilled student, docs/distill.md).
    guidance:     distilled guidance value, or None when the model has no guidance embedding.
    cfg_scale:    default classifier-free guidance (1.0 = off).
    default_prompt: a caption the model knows, for the default example.
    prediction:   what the transformer outputs: "velocity" (released models) or "x0" (converted
                  to a velocity by `framepack.sampling.x0_to_velocity`).
    max_latent_index: the largest latent frame index (RoPE time) seen in training; sections
                  farther from the start frame are extrapolation (None: unknown).
    history_codebook: K when history latents are discretized to a K-entry codebook
                  (`history_codebook.safetensors`, SPEC sec. 4); None: continuous history.
    model_card:   free-form facts (training command, wall time, data seeds, measurements).
    training:     the resolved training config and progress (steps, samples).
    """

    fps: float
    height: int
    width: int
    window: int
    schedule: str
    anchors: str = "start"
    pad: str = "zeros"
    layouts: tuple[str, ...] = ("forward", "inverted", "endpoints")
    default_plan: str = "inverted"
    steps: int = 25
    shift: float = 1.0
    sampler: str = "unipc"
    guidance: float | None = None
    cfg_scale: float = 1.0
    default_prompt: str = ""
    max_latent_index: int | None = None
    prediction: str = "velocity"
    history_codebook: int | None = None
    model_card: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("height", "width", "window", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("fps", "shift", "cfg_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        parse_schedule(self.schedule)
        if not set(self.layouts) <= {"forward", "inverted", "endpoints"}:
            raise ValueError(f"layouts must name forward, inverted or endpoints, got {list(self.layouts)}")
        if self.default_plan not in ("forward", "inverted", "endpoints", "multi-endpoint"):
            raise ValueError(f"default_plan must be a plan name, got {self.default_plan!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        k = self.history_codebook
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 2):
            raise ValueError(f"history_codebook must be null or an integer >= 2 (K), got {k!r}")

    def to_json(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["layouts"] = list(self.layouts)
        return {"format": FORMAT, "version": VERSION, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BundleMeta:
        if not isinstance(data, dict):
            raise ValueError(f"must hold a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise ValueError(f"not a framepack bundle: format is {data.get('format')!r}, expected {FORMAT!r}")
        if int(data.get("version", 0)) > VERSION:
            raise ValueError(f"bundle version {data['version']} is newer than this framepack ({VERSION})")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["layouts"] = tuple(known.get("layouts", ()))
        return cls(**known)


@dataclass
class Bundle:
    """A loaded bundle: the three modules, the generation settings and the history codebook
    (None unless the model was trained with discretized history)."""

    transformer: PackedTransformer
    text_encoder: VocabEncoder
    codec: Codec
    meta: BundleMeta
    path: Path
    codebook: Codebook | None = None


def is_bundle(path: str | os.PathLike) -> bool:
    return (Path(path) / META_NAME).is_file()


def save_bundle(
    path: str | os.PathLike,
    transformer: PackedTransformer,
    text_encoder: VocabEncoder,
    codec: Codec,
    meta: BundleMeta,
    card: str | None = None,
    codebook: Codebook | None = None,
) -> Path:
    """Write a bundle directory (replacing one that is there) via a temporary sibling + rename.

    The transformer is stored in its current dtype (cast it to float16 first to halve the size).
    `codebook` (the history codebook) must match `meta.history_codebook`.
    """
    if meta.history_codebook != (None if codebook is None else codebook.k):
        have = None if codebook is None else codebook.k
        raise ValueError(
            f"meta.history_codebook is {meta.history_codebook} but the codebook given has K = {have}"
        )
    out = Path(path)
    if out.exists() and not (out / META_NAME).is_file():
        raise UserError(f"{out} exists and is not a model bundle; a bundle replaces only a bundle")
    with writing(out):  # what the disk refuses: one line naming the bundle; the old one is kept
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            transformer.save_pretrained(tmp / TRANSFORMER_DIR)
            text_encoder.save(tmp)
            (tmp / CODEC_NAME).write_text(json.dumps(_save_codec(codec, tmp), indent=2) + "\n")
            (tmp / META_NAME).write_text(json.dumps(meta.to_json(), indent=2) + "\n")
            if codebook is not None:
                codebook.save(tmp / CODEBOOK_NAME)
            if card is not None:
                (tmp / "README.md").write_text(card)
            _move_into_place(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished bundle `tmp` to `out`; an older bundle there is swapped out first and
    put back if the rename fails, then removed."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old / out.name, out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _save_codec(codec: Codec, folder: Path) -> dict[str, Any]:
    """The codec's config for `codec.json`; a codec with weights (a learned autoencoder: it has a
    `save(directory)`) is saved into `folder/codec/`, and its config names that folder relative
    to the bundle, so a bundle is whole on its own and can be moved."""
    config = dict(codec.config())
    if callable(getattr(codec, "save", None)):
        codec.save(folder / CODEC_DIR)  # type: ignore[attr-defined]
        config["path"] = CODEC_DIR
    return config


def load_meta(path: str | os.PathLike) -> BundleMeta:
    meta_path = Path(path) / META_NAME
    if not meta_path.is_file():
        raise UserError(
            f"{path} is not a model bundle (no {META_NAME}); pass a folder written by framepack train"
        )
    try:
        return BundleMeta.from_json(json.loads(meta_path.read_text()))
    except (ValueError, TypeError, OSError) as err:
        raise UserError(f"{meta_path}: {err}; re-export the bundle or fix the file") from None


def update_meta(path: str | os.PathLike, **changes: Any) -> BundleMeta:
    """Rewrite fields of a bundle's `framepack.json` (e.g. the model card after evaluation)."""
    meta = dataclasses.replace(load_meta(path), **changes)
    target = Path(path) / META_NAME
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(meta.to_json(), indent=2) + "\n")
    os.replace(tmp, target)
    return meta


def load_bundle(
    path: str | os.PathLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = torch.float32,
) -> Bundle:
    """Load a bundle; modules are in eval mode on `device` (CPU default), the transformer cast to
    `dtype` (float32 by default, whatever the stored precision; None keeps the stored dtype)."""
    root = Path(path)
    meta = load_meta(root)
    try:
        raw = json.loads((root / CODEC_NAME).read_text())
        if not isinstance(raw, dict):
            raise ValueError("must hold a JSON object")
        if isinstance(raw.get("path"), str) and not Path(raw["path"]).is_absolute():
            raw["path"] = str(root / raw["path"])  # a learned codec's weights inside the bundle
        codec = codec_from_config(raw)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise UserError(f"{root / CODEC_NAME}: {err}; re-export the bundle or fix the file") from None
    try:
        transformer = PackedTransformer.from_pretrained(root / TRANSFORMER_DIR, dtype=dtype, device=device)
        text_encoder = VocabEncoder.load(root, device=device).eval()
    except UserError:
        raise
    except Exception as err:  # safetensors, json and torch raise their own types for a damaged file
        raise UserError(f"{root}: a model file is missing or damaged ({err}); re-export the bundle") from None
    return Bundle(transformer.eval(), text_encoder, codec, meta, root, _load_codebook(root, meta, codec))


def _load_codebook(root: Path, meta: BundleMeta, codec: Codec) -> Codebook | None:
    """The history codebook the meta announces (UserError when missing, damaged or mismatched)."""
    if meta.history_codebook is None:
        return None
    path = root / CODEBOOK_NAME
    try:
        codebook = Codebook.load(path)
    except Exception as err:  # safetensors raises its own types for a damaged file
        raise UserError(
            f"{path}: the history codebook is missing or damaged ({err}); re-export the bundle"
        ) from None
    if codebook.k != meta.history_codebook or codebook.channels != codec.latent_channels:
        raise UserError(
            f"{path}: a {codebook.k} x {codebook.channels} codebook, but {META_NAME} says K = "
            f"{meta.history_codebook} and the codec makes {codec.latent_channels} channels; re-export the bundle"
        )
    return codebook


def demo_path() -> Path:
    """The bundled demo model (`framepack/assets/demo`)."""
    return Path(__file__).parent / "assets" / "demo"
