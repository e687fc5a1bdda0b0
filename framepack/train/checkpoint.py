"""Training checkpoints: tensors in safetensors, everything else in JSON, written atomically.

A checkpoint at step N is two files in `RUN_DIR/checkpoints/`:

- `step-000000N.safetensors`: `model.*` (trained weights), `ema.*` (averaged weights),
  `optim/<param>/<name>` (optimizer moments; <param> is an index or a parameter name), `rng.torch` (torch's CPU generator state);
- `step-000000N.json`: step, samples seen, optimizer hyper-parameters (param groups and
  non-tensor per-parameter state), python and numpy RNG states, the data position and any
  counters the loop keeps.

Each file is written to a temporary name and moved into place with `os.replace`; the JSON goes
last and marks the checkpoint complete, so a process killed mid-write leaves the previous
checkpoint as the latest one. The JSON holds the SHA-256 of the tensor file: a checkpoint damaged
on disk is refused with one line (and kept), never loaded. No pickles.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from framepack.disk import writing
from framepack.errors import UserError

_NAME = re.compile(r"^step-(\d{7,})\.json$")


@dataclass
class Checkpoint:
    """What one checkpoint holds, in memory."""

    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor]
    optimizer: dict[str, Any]  # torch optimizer state_dict
    state: dict[str, Any]  # JSON: samples seen, data position, counters, RNG states


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file of this process beside `path`, then move it into place
    (several processes may write the same file: each uses its own temporary name)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with writing(path):
            tmp.write_bytes(data)
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state_dict["state"].items():
        for name, value in per_param.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{index}/{name}"] = value.detach().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _key(index: str) -> int | str:
    """Optimizer state keys are parameter indices (plain optimizers) or names (FSDP full state)."""
    return int(index) if index.isdigit() else index


def _unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split("/", 2)
        state.setdefault(_key(index), {})[name] = value
    for index, values in meta["scalars"].items():
        state.setdefault(_key(index), {}).update(values)
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def capture_rng() -> tuple[Tensor, dict[str, Any]]:
    """The process-global RNG states (torch CPU tensor; python and numpy as JSON)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return torch.get_rng_state(), {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def restore_rng(torch_state: Tensor, states: dict[str, Any]) -> None:
    """Inverse of `capture_rng` (used only by the training entry point, on resume)."""
    torch.set_rng_state(torch_state)
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(directory: Path, ckpt: Checkpoint) -> Path:
    """Write `ckpt` into `directory` atomically; returns the JSON path."""
    with writing(directory):
        directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"step-{ckpt.step:07d}"
    optim_tensors, optim_meta = _flatten_optimizer(ckpt.optimizer)
    rng_torch, rng_json = capture_rng()
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in ckpt.model.items()}
    tensors |= {f"ema.{k}": v.detach().contiguous() for k, v in ckpt.ema.items()}
    tensors |= optim_tensors | {"rng.torch": rng_torch}
    tmp = stem.with_name(stem.name + ".safetensors.tmp")
    try:
        with writing(stem.with_suffix(".safetensors")):
            save_file(tensors, str(tmp))
            os.replace(tmp, stem.with_suffix(".safetensors"))
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    meta = {"step": ckpt.step, "optimizer": optim_meta, "rng": rng_json, "state": ckpt.state}
    meta["sha256"] = file_sha256(stem.with_suffix(".safetensors"))
    atomic_write_json(stem.with_suffix(".json"), meta)
    return stem.with_suffix(".json")


def latest_checkpoint(directory: Path) -> Path | None:
    """The JSON of the highest complete checkpoint in `directory`, or None."""
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    found = [(s, p) for s, p in found if p.with_suffix(".safetensors").is_file()]
    return max(found)[1] if found else None


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_checkpoint(json_path: Path, restore_global_rng: bool = False) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; a damaged one raises UserError (one line)."""
    tensor_path = json_path.with_suffix(".safetensors")
    hint = f"move {json_path.stem}.* out of {json_path.parent} to resume from the checkpoint before it"
    try:
        meta = json.loads(json_path.read_text())
        if "sha256" in meta and file_sha256(tensor_path) != meta["sha256"]:
            raise UserError(f"checkpoint {tensor_path} is damaged (checksum mismatch); {hint}")
        return _checkpoint(meta, load_file(str(tensor_path)), restore_global_rng)
    except (ValueError, OSError, TypeError, KeyError) as err:  # JSON, safetensors header, missing
        raise UserError(f"checkpoint {json_path} cannot be read ({type(err).__name__}); {hint}") from None


def _checkpoint(meta: dict[str, Any], tensors: dict[str, Tensor], restore_global_rng: bool) -> Checkpoint:
    groups: dict[str, dict[str, Tensor]] = {"model": {}, "ema": {}, "optim": {}}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            groups["optim"][key] = value
        elif (prefix := key.partition(".")[0]) in ("model", "ema"):
            groups[prefix][key.partition(".")[2]] = value
    if restore_global_rng:
        restore_rng(tensors["rng.torch"], meta["rng"])
    return Checkpoint(
        step=int(meta["step"]),
        model=groups["model"],
        ema=groups["ema"],
        optimizer=_unflatten_optimizer(groups["optim"], meta["optimizer"]),
        state=meta["state"],
    )


def check_settings(saved: dict[str, Any] | None, wanted: dict[str, Any], path: Path) -> None:
    """Refuse (one line, every difference listed) to resume a checkpoint trained with other
    settings. `saved` is None for checkpoints written before settings were recorded."""
    if saved is None:
        return
    changed = [
        f"{k}: {json.dumps(saved.get(k))} -> {json.dumps(wanted.get(k))}"
        for k in sorted(set(saved) | set(wanted))
        if saved.get(k) != wanted.get(k)
    ]
    if changed:
        raise UserError(
            f"checkpoint {path.name} was trained with other settings ({'; '.join(changed)}); "
            "restore the run's config.json or start a new run with --init"
        )


def prune_checkpoints(directory: Path, keep: int) -> None:
    """Delete all but the `keep` most recent complete checkpoints."""
    found = sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name)))
    for _, path in found[:-keep] if keep > 0 else []:
        path.with_suffix(".safetensors").unlink(missing_ok=True)
        path.unlink(missing_ok=True)
