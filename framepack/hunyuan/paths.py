"""Locating the released model files on disk, offline.

Three Hugging Face repositories make up a FramePack run:

- the transformer: `lllyasviel/FramePackI2V_HY` (inverted) or
  `lllyasviel/FramePack_F1_I2V_HY_20250503` (forward, "F1"): `config.json`, safetensors shards and
  `diffusion_pytorch_model.safetensors.index.json` at the top level;
- `hunyuanvideo-community/HunyuanVideo`: `vae/`, `text_encoder/` (LLaMA), `text_encoder_2/`
  (CLIP-L), `tokenizer/`, `tokenizer_2/` (its `transformer/` is not needed);
- `lllyasviel/flux_redux_bfl`: `image_encoder/` (SigLIP), `feature_extractor/`.

`framepack download MODEL` (`framepack.hunyuan.download`) fetches exactly `Layout.files`.

Each may be given as a plain directory (the repository's files) or found inside a Hugging Face
cache (`models--org--name/snapshots/<hash>/...`, or a cache root / `HF_HOME` holding such
folders). Nothing here touches the network. Problems raise `UserError` naming what was expected
and every place that was searched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from framepack.errors import UserError


@dataclass(frozen=True)
class Layout:
    """A released repository: its id, per part (subfolder, "" = top level) the required files,
    and the files the loaders read (glob patterns relative to the repository root).

    A required name ending in "*.ext" means "at least one file with that extension". `files`
    is what `framepack download` fetches (`allow_patterns`): nothing else of the repository.
    """

    repo_id: str
    parts: tuple[tuple[str, tuple[str, ...]], ...]
    files: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.repo_id.split("/")[-1]


_WEIGHTS = "*.safetensors"
# What diffusers' and transformers' `from_pretrained(use_safetensors=True)` read: the config,
# one safetensors file or its shards and their index (no .bin, no fp16 / fp32 variants).
_DIFFUSERS_FILES = (
    "config.json",
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model-*-of-*.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
)
_TRANSFORMERS_FILES = (
    "config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
)


def _under(folder: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{folder}/{n}" for n in names)


TRANSFORMER_INVERTED = Layout(
    "lllyasviel/FramePackI2V_HY", (("", ("config.json", _WEIGHTS)),), _DIFFUSERS_FILES
)
TRANSFORMER_F1 = Layout(
    "lllyasviel/FramePack_F1_I2V_HY_20250503", (("", ("config.json", _WEIGHTS)),), _DIFFUSERS_FILES
)
HUNYUAN_VIDEO = Layout(  # its transformer/ (HunyuanVideo itself, ~25 GB) is not used
    "hunyuanvideo-community/HunyuanVideo",
    (
        ("vae", ("config.json", _WEIGHTS)),
        ("text_encoder", ("config.json", _WEIGHTS)),
        ("text_encoder_2", ("config.json", _WEIGHTS)),
        ("tokenizer", ("tokenizer_config.json",)),
        ("tokenizer_2", ("tokenizer_config.json",)),
    ),
    (
        *_under("vae", _DIFFUSERS_FILES),
        *_under("text_encoder", _TRANSFORMERS_FILES),
        *_under("text_encoder_2", _TRANSFORMERS_FILES),
        "tokenizer/*.json",  # tokenizer.json, tokenizer_config.json, special_tokens_map.json
        "tokenizer_2/*.json",  # vocab.json, tokenizer_config.json, special_tokens_map.json
        "tokenizer_2/merges.txt",
    ),
)
FLUX_REDUX = Layout(  # its flux1-redux-dev.safetensors and image_embedder/ are not used
    "lllyasviel/flux_redux_bfl",
    (
        ("image_encoder", ("config.json", _WEIGHTS)),
        ("feature_extractor", ("preprocessor_config.json",)),
    ),
    (*_under("image_encoder", _TRANSFORMERS_FILES), "feature_extractor/preprocessor_config.json"),
)

TRANSFORMERS_BY_MODEL = {"hunyuan-inverted": TRANSFORMER_INVERTED, "hunyuan-f1": TRANSFORMER_F1}


@dataclass(frozen=True)
class ModelPaths:
    """Resolved directories of one released setup."""

    transformer: Path  # holds config.json + shards + index
    hunyuan: Path  # holds vae/, text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/
    redux: Path  # holds image_encoder/, feature_extractor/

    def part(self, name: str) -> Path:
        """A subfolder: 'vae', 'text_encoder', ..., 'image_encoder', 'feature_extractor'."""
        root = self.redux if name in ("image_encoder", "feature_extractor") else self.hunyuan
        return root / name


def _missing(directory: Path, layout: Layout) -> list[str]:
    """Required files of `layout` absent from `directory` (as relative paths)."""
    missing = []
    for sub, names in layout.parts:
        folder = directory / sub if sub else directory
        for name in names:
            if name.startswith("*"):
                found = folder.is_dir() and any(folder.glob(name))
                label = f"{sub}/{name}" if sub else name
            else:
                found = (folder / name).is_file()
                label = f"{sub}/{name}" if sub else name
            if not found:
                missing.append(label)
    return missing


def _snapshot(repo_cache: Path) -> Path | None:
    """The snapshot of a `models--org--name` cache folder: refs/main if present, else the newest."""
    snapshots = repo_cache / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo_cache / "refs" / "main"
    if ref.is_file():
        chosen = snapshots / ref.read_text().strip()
        if chosen.is_dir():
            return chosen
    candidates = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def candidates(root: Path, layout: Layout) -> list[Path]:
    """Directories under `root` that could hold `layout`, in search order."""
    org, name = layout.repo_id.split("/")
    cache_name = f"models--{org}--{name}"
    out = [root, root / name, root / org / name]
    # Hugging Face cache: root is a models--org--name folder, a cache root, or an HF_HOME.
    for repo_cache in (root, root / cache_name, root / "hub" / cache_name):
        snap = _snapshot(repo_cache)
        if snap is not None:
            out.append(snap)
    seen, unique = set(), []
    for path in out:
        if path not in seen:
            seen.add(path)
            unique.append(path)
    return unique


def find(layout: Layout, roots: list[Path], fetch: str | None = None) -> Path:
    """The first directory under `roots` that holds every required file of `layout`.

    Raises UserError listing the expected files and each place searched (with what it lacked),
    ending with `fetch`, the command that gets the files (default: `huggingface-cli download`).
    """
    looked: list[str] = []
    for root in roots:
        for path in candidates(Path(root).expanduser(), layout):
            if not path.is_dir():
                continue
            missing = _missing(path, layout)
            if not missing:
                return path
            looked.append(f"{path} (missing {', '.join(missing[:3])}{'...' if len(missing) > 3 else ''})")
    expected = ", ".join(f"{sub}/{n}" if sub else n for sub, names in layout.parts for n in names)
    where = "; ".join(looked) if looked else ", ".join(str(r) for r in roots) + " (no such directory)"
    fetch = fetch or f"Download it (e.g. `huggingface-cli download {layout.repo_id}`) and pass its folder"
    raise UserError(f"could not find {layout.repo_id} (expected {expected}); looked in: {where}. {fetch}")


def download_command(model: str, model_dir: str | Path | None = None) -> str:
    """The one command that fetches every file `locate(model, model_dir)` needs."""
    if model_dir is None:
        return f"framepack download {model}"
    return f"framepack download {model} --dir {model_dir}"


def locate(
    model: str,
    model_dir: str | Path | None = None,
    *,
    transformer_dir: str | Path | None = None,
    hunyuan_dir: str | Path | None = None,
    redux_dir: str | Path | None = None,
) -> ModelPaths:
    """Find the three released repositories for `model` ('hunyuan-inverted' or 'hunyuan-f1').

    `model_dir` may hold the three repositories side by side (`FramePackI2V_HY/`,
    `HunyuanVideo/`, `flux_redux_bfl/`), be a Hugging Face cache root, or be an `HF_HOME`. Explicit
    `*_dir` arguments win over `model_dir`. Without any, the default HF cache
    (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`) is searched.
    """
    if model not in TRANSFORMERS_BY_MODEL:
        raise UserError(f"unknown model {model!r}; choose one of {', '.join(TRANSFORMERS_BY_MODEL)}")
    default_roots = [Path(model_dir)] if model_dir is not None else _default_cache_roots()

    def roots(explicit: str | Path | None) -> list[Path]:
        return [Path(explicit)] if explicit is not None else default_roots

    fetch = f"Get the weights (about 40 GB) with: {download_command(model, model_dir)}"
    return ModelPaths(
        transformer=find(TRANSFORMERS_BY_MODEL[model], roots(transformer_dir), fetch),
        hunyuan=find(HUNYUAN_VIDEO, roots(hunyuan_dir), fetch),
        redux=find(FLUX_REDUX, roots(redux_dir), fetch),
    )


def _default_cache_roots() -> list[Path]:
    roots = []
    if os.environ.get("HF_HUB_CACHE"):
        roots.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        roots.append(Path(os.environ["HF_HOME"]))
    roots.append(Path.home() / ".cache" / "huggingface")
    return roots


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Forbid Hugging Face network access while loading (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE).

    Loading always uses local directories with `local_files_only=True`; this is a second guard
    for libraries that would otherwise look for updates.
    """
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict.fromkeys(keys, "1"))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_part(directory: Path, layout: Layout, part: str) -> Path:
    """`directory/part` after checking that it holds the part's required files (UserError if not)."""
    names = dict(layout.parts)[part]
    sub_layout = Layout(layout.repo_id, ((part, names),))
    missing = _missing(directory, sub_layout)
    if missing:
        raise UserError(
            f"{directory} is not a {layout.repo_id} folder: missing {', '.join(missing)}; "
            f"point to the folder that holds {part}/"
        )
    return directory / part
