"""`framepack download hunyuan-inverted|hunyuan-f1`: fetch the released weights, and only those.

Three Hugging Face repositories (`framepack.hunyuan.paths`): the transformer, the HunyuanVideo
VAE and text encoders, the SigLIP image encoder. Only the files the loaders read are fetched
(`Layout.files`, passed as `allow_patterns`): HunyuanVideo's own 25 GB transformer and the
Redux embedder are left on the server. The total size is shown before anything is fetched;
huggingface_hub shows the progress and resumes interrupted files (run the same command again).

With `directory` the repositories go to `directory/<name>/` (plain folders side by side, what
`--model-dir directory` finds); without, to the Hugging Face cache that loading searches by
default. Loading itself never touches the network; this module is the only place that does.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framepack.errors import UserError
from framepack.hunyuan.paths import (
    FLUX_REDUX,
    HUNYUAN_VIDEO,
    TRANSFORMERS_BY_MODEL,
    Layout,
    ModelPaths,
    locate,
)

GB = 1e9


def repositories(model: str) -> tuple[Layout, ...]:
    """The three repositories `model` ('hunyuan-inverted' or 'hunyuan-f1') loads from."""
    if model not in TRANSFORMERS_BY_MODEL:
        raise UserError(f"unknown model {model!r}; choose one of {', '.join(TRANSFORMERS_BY_MODEL)}")
    return (TRANSFORMERS_BY_MODEL[model], HUNYUAN_VIDEO, FLUX_REDUX)


@dataclass(frozen=True)
class RepoPlan:
    """One repository's files (name, bytes) and which of them are not here yet."""

    layout: Layout
    files: tuple[tuple[str, int], ...]
    missing: tuple[str, ...]
    target: Path | None  # local_dir, or None for the Hugging Face cache

    @property
    def size(self) -> int:
        return sum(size for _, size in self.files)

    @property
    def to_fetch(self) -> int:
        missing = set(self.missing)
        return sum(size for name, size in self.files if name in missing)


def _fetch_kwargs(layout: Layout, target: Path | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"allow_patterns": list(layout.files)}
    if target is not None:
        kwargs["local_dir"] = str(target)
    return kwargs


def plan(model: str, directory: str | Path | None = None, *, hub: Any = None) -> list[RepoPlan]:
    """What `download` would fetch: per repository, the files the loader reads and their sizes.

    Asks the server (a dry run of `snapshot_download`); raises UserError when it cannot.
    """
    hub = hub or _hub()
    root = None if directory is None else Path(directory).expanduser()
    plans = []
    for layout in repositories(model):
        target = None if root is None else root / layout.name
        infos = _call(hub.snapshot_download, layout, dry_run=True, **_fetch_kwargs(layout, target))
        files = tuple(sorted((i.filename, int(i.file_size or 0)) for i in infos))
        missing = tuple(sorted(i.filename for i in infos if i.will_download))
        plans.append(RepoPlan(layout, files, missing, target))
    return plans


def download(
    model: str,
    directory: str | Path | None = None,
    *,
    hub: Any = None,
    echo: Callable[[str], None] = print,
) -> ModelPaths:
    """Fetch every file `model` needs into `directory` (or the HF cache); return the located paths.

    Prints the total size first, then huggingface_hub's progress. Raises UserError (one line)
    when the server cannot be reached, the disk is too small or the result does not load.
    """
    hub = hub or _hub()
    root = None if directory is None else Path(directory).expanduser()
    if root is not None and root.exists() and not root.is_dir():
        raise UserError(f"--dir {directory} is a file; give a folder (it is created if missing)")
    plans = plan(model, root, hub=hub)
    total, to_fetch = sum(p.size for p in plans), sum(p.to_fetch for p in plans)
    where = str(root) if root is not None else "the Hugging Face cache"
    echo(
        f"{model}: {sum(len(p.files) for p in plans)} files in {len(plans)} repositories, "
        f"{total / GB:.1f} GB; {to_fetch / GB:.1f} GB to fetch into {where}"
    )
    for p in plans:
        echo(f"  {p.layout.repo_id}: {len(p.files)} files, {p.size / GB:.1f} GB ({len(p.missing)} to fetch)")
    _check_space(root, to_fetch)
    for p in plans:
        if p.missing:
            _call(hub.snapshot_download, p.layout, **_fetch_kwargs(p.layout, p.target))
    paths = locate(model, root)
    model_dir = f" --model-dir {root}" if root is not None else ""
    echo(f"ready: framepack generate --model {model}{model_dir} --image IMAGE --prompt TEXT")
    return paths


def _check_space(root: Path | None, needed: int) -> None:
    folder = root if root is not None else Path(_cache_dir())
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise UserError(
            f"{needed / GB:.1f} GB to fetch but {existing} has {free / GB:.1f} GB free; "
            f"free some space or pass --dir on a larger disk"
        )


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _call(fn: Callable[..., Any], layout: Layout, **kwargs: Any) -> Any:
    """Call the hub for `layout`; network and server failures become one line."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise UserError("HF_HUB_OFFLINE is set, so nothing can be downloaded: unset it and run again")
    try:
        return fn(layout.repo_id, **kwargs)
    except _network_errors() as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"could not download {layout.repo_id}: {first}; check the connection and run the same "
            f"command again (files already fetched are kept and partial ones resumed)"
        ) from None


def _network_errors() -> tuple[type[BaseException], ...]:
    """Hub and HTTP errors (HfHubHTTPError and requests' errors are OSErrors; httpx's are not)."""
    errors: tuple[type[BaseException], ...] = (OSError, ValueError)
    try:
        import httpx
    except ImportError:
        return errors
    return (*errors, httpx.HTTPError)


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise UserError("downloading needs huggingface_hub: pip install 'framepack[hunyuan]'") from None
    if not hasattr(huggingface_hub.file_download, "DryRunFileInfo"):
        raise UserError(
            f"huggingface_hub {huggingface_hub.__version__} is too old to size a download; "
            f"pip install -U 'huggingface_hub>=1.1'"
        )
    return huggingface_hub
