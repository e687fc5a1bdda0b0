"""Loading and saving the packed transformer in the diffusers directory format.

    <dir>/config.json                                   diffusers keys, `_class_name` included
    <dir>/diffusion_pytorch_model.safetensors           one file, or
    <dir>/diffusion_pytorch_model-0000i-of-0000n.safetensors + ...safetensors.index.json

This is the layout of the released checkpoints (lllyasviel/FramePackI2V_HY: 3 bf16 shards), so
they load as they are. Local paths only; tensors are read with safetensors (memory-mapped) and
cast to the target dtype one at a time, into a model built on the meta device.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from framepack.models.config import TransformerConfig

logger = logging.getLogger(__name__)

CLASS_NAME = "HunyuanVideoFramepackTransformer3DModel"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
DIFFUSERS_VERSION = "0.34.0"

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string like "5GB", "200MB", "64KiB"."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", size)
    if match is None or match.group(2).upper() not in _UNITS:
        raise ValueError(f"max_shard_size must be bytes or a size like '5GB', got {size!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def save_pretrained(
    model: nn.Module, directory: str | os.PathLike, max_shard_size: int | str = "5GB"
) -> None:
    """Write `config.json` (from `model.config`, a TransformerConfig) and the weights, sharded
    when they exceed `max_shard_size` bytes."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = {"_class_name": CLASS_NAME, "_diffusers_version": DIFFUSERS_VERSION, **model.config.to_dict()}
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")

    limit = parse_size(max_shard_size)
    shards: list[dict[str, torch.Tensor]] = [{}]
    sizes = [0]
    for name, tensor in model.state_dict().items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and sizes[-1] + nbytes > limit:
            shards.append({})
            sizes.append(0)
        shards[-1][name] = tensor.detach().to("cpu").contiguous()
        sizes[-1] += nbytes
    for stale in [*out.glob("diffusion_pytorch_model*.safetensors"), out / INDEX_NAME]:
        stale.unlink(missing_ok=True)
    if len(shards) == 1:
        save_file(shards[0], out / WEIGHTS_NAME, metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        filename = f"diffusion_pytorch_model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, out / filename, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, filename))
    index = {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}
    (out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")


def load_config(directory: str | os.PathLike) -> TransformerConfig:
    """Read `<directory>/config.json` (diffusers keys; unknown keys are logged and ignored)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"transformer config not found: expected {path}")
    data = json.loads(path.read_text())
    class_name = data.get("_class_name", CLASS_NAME)
    if class_name not in (CLASS_NAME, "HunyuanVideoTransformer3DModelPacked"):
        raise ValueError(f"{path}: _class_name is {class_name!r}, expected {CLASS_NAME!r}")
    config, ignored = TransformerConfig.from_dict(data)
    if ignored:
        logger.info("%s: ignoring config keys %s", path, ignored)
    return config


def weight_files(directory: str | os.PathLike) -> dict[str, Path]:
    """Map every tensor name to the safetensors file that holds it."""
    root = Path(directory)
    single, index = root / WEIGHTS_NAME, root / INDEX_NAME
    if index.is_file():
        files = {name: root / filename for name, filename in read_weight_map(index).items()}
        for path in set(files.values()):
            if not path.is_file():
                raise FileNotFoundError(f"weight shard listed in {index} not found: expected {path}")
        return files
    if single.is_file():
        with safe_open(single, framework="pt") as f:
            return dict.fromkeys(f.keys(), single)
    raise FileNotFoundError(f"transformer weights not found: expected {single} or {index}")


def read_weight_map(index: Path) -> dict[str, str]:
    """The `weight_map` (tensor name -> shard file name) of a safetensors index; ValueError in one
    line when the file is not JSON or not such an object."""
    hint = "re-download the model or fix the file"
    try:
        data = json.loads(index.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{index} is not valid JSON ({str(err).splitlines()[0][:80]}); {hint}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v and "/" not in v and v != ".."
        for k, v in weight_map.items()
    ):
        raise ValueError(
            f'{index} is not a safetensors index (expected {{"weight_map": {{tensor name: shard '
            f"file in this folder}}}}); {hint}"
        )
    return weight_map


def load_pretrained(
    model: nn.Module,
    directory: str | os.PathLike,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Fill `model` (built from `load_config(directory)`, usually on the meta device) with the
    weights of a diffusers-format directory; returns it in eval mode.

    dtype: cast every tensor to it (None keeps the stored dtype); device: where tensors go
    (default CPU). Raises ValueError naming the key on any missing, unexpected or mis-shaped
    tensor, FileNotFoundError naming the expected path on missing files.
    """
    files = weight_files(directory)
    expected = model.state_dict()
    unexpected = sorted(set(files) - set(expected))
    missing = sorted(set(expected) - set(files))
    if unexpected:
        raise ValueError(
            f"checkpoint key {unexpected[0]!r} is not a parameter of this config ({len(unexpected)} such keys)"
        )
    if missing:
        raise ValueError(f"checkpoint is missing key {missing[0]!r} ({len(missing)} missing keys)")

    target = torch.device(device) if device is not None else torch.device("cpu")
    state: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for name, path in files.items():
        by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        with safe_open(path, framework="pt", device="cpu") as f:
            for name in names:
                tensor = f.get_tensor(name)
                if tuple(tensor.shape) != tuple(expected[name].shape):
                    raise ValueError(
                        f"checkpoint key {name!r} has shape {tuple(tensor.shape)}, "
                        f"the model expects {tuple(expected[name].shape)}"
                    )
                state[name] = tensor.to(device=target, dtype=dtype or tensor.dtype)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
