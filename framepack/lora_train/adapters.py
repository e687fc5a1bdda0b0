"""LoRA adapters on the packed transformer, through PEFT.

`attach_lora` injects PEFT `lora.Linear` layers (`lora_A` (rank, in), `lora_B` (out, rank),
scale `alpha / rank`) into the transformer in place and freezes every base weight; `lora_pairs`
reads the trained factors back as `framepack.lora.LoraPair`s keyed by module name; `save_lora`
writes them in the kohya / musubi-tuner or diffusers naming (framepack.lora); `load_adapters`
attaches a saved LoRA (either naming) as unmerged adapters; `detach_lora` removes them, which
leaves the base weights exactly as they were (they are never written to).

Targets (`TARGETS`) follow musubi-tuner's FramePack LoRA (`networks.lora_framepack`): every Linear
of the dual- and single-stream blocks except the adaLN modulations (`norm*.linear`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from framepack.errors import UserError
from framepack.lora import LoraPair, load_lora_file, parse_lora, to_diffusers, to_kohya

ADAPTER = "default"
_DUAL_ATTN = r"attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)"
_SINGLE_ATTN = r"attn\.(to_q|to_k|to_v)"
TARGETS: dict[str, str] = {
    # attention and MLP projections of every block (musubi-tuner's FramePack default)
    "attn-mlp": rf"transformer_blocks\.\d+\.({_DUAL_ATTN}|ff(_context)?\.net\.(0\.proj|2))"
    rf"|single_transformer_blocks\.\d+\.({_SINGLE_ATTN}|proj_mlp|proj_out)",
    # attention projections only (q, k, v, out; the single blocks' fused out is proj_out)
    "attn": rf"transformer_blocks\.\d+\.{_DUAL_ATTN}|single_transformer_blocks\.\d+\.({_SINGLE_ATTN}|proj_out)",
}


@dataclass(frozen=True)
class LoraSpec:
    """rank: the adapters' rank r; alpha: scale numerator (scale = alpha / r; None = r);
    targets: a `TARGETS` name; dropout: on the adapter input while training."""

    rank: int = 32
    alpha: float | None = None
    targets: str = "attn-mlp"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be > 0, got {self.alpha}")
        if self.targets not in TARGETS:
            raise ValueError(f"LoRA targets must be one of {', '.join(TARGETS)}, got {self.targets!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

    @property
    def scale(self) -> float:
        return (self.alpha if self.alpha is not None else self.rank) / self.rank


def _peft_config(target_modules: str, rank: int, alpha: float, dropout: float = 0.0, init: bool = True):
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=target_modules,
        lora_dropout=dropout,
        init_lora_weights=init,
        bias="none",
    )


def attach_lora(transformer: nn.Module, spec: LoraSpec, seed: int = 0) -> nn.Module:
    """Inject fresh adapters (B = 0, so the output is unchanged; A drawn from `seed`) in place.

    Returns PEFT's `LoraModel` handle (pass it to `detach_lora`); train `transformer` itself.
    Base weights are frozen; the adapters are float32 whatever the base dtype.
    """
    from peft.tuners.lora import LoraModel

    from framepack.train.components import seeded

    config = _peft_config(TARGETS[spec.targets], spec.rank, spec.scale * spec.rank, spec.dropout)
    with seeded(seed):
        handle = LoraModel(transformer, config, ADAPTER)
    for p in adapter_parameters(transformer):
        p.data = p.data.float()
    return handle


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable adapter weights (`lora_A` / `lora_B`), in module order."""
    return [p for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{module name: PEFT LoRA layer} of `model` (names as in the base model)."""
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def lora_pairs(model: nn.Module) -> dict[str, LoraPair]:
    """The adapters' factors as float32 CPU `LoraPair`s: down (r, in), up (out, r), alpha."""
    pairs = {}
    for name, layer in lora_layers(model).items():
        down = layer.lora_A[ADAPTER].weight.detach().float().cpu().clone()
        up = layer.lora_B[ADAPTER].weight.detach().float().cpu().clone()
        pairs[name] = LoraPair(down, up, float(layer.scaling[ADAPTER] * down.shape[0]))
    return pairs


def pairs_from_state(state: dict[str, Tensor], alpha: float | None) -> dict[str, LoraPair]:
    """`LoraPair`s (float32) from adapter weights keyed `<module>.lora_A.default.weight` /
    `<module>.lora_B.default.weight` (a model's or a checkpoint's state), all with `alpha`."""
    parts: dict[str, dict[str, Tensor]] = {}
    for key, tensor in state.items():
        for kind in ("lora_A", "lora_B"):
            if f".{kind}." in key:
                parts.setdefault(key.split(f".{kind}.")[0], {})[kind] = tensor
    return {
        name: LoraPair(got["lora_A"].detach().float().cpu(), got["lora_B"].detach().float().cpu(), alpha)
        for name, got in sorted(parts.items())
    }


def detach_lora(handle: nn.Module) -> nn.Module:
    """Remove the adapters of `attach_lora` / `load_adapters`; returns the base transformer."""
    return handle.unload()


def load_adapters(
    transformer: nn.Module, lora: dict[str, Tensor] | str | Path, scale: float = 1.0
) -> nn.Module:
    """Attach a saved LoRA (diffusers or kohya naming) as unmerged adapters scaled by `scale`.

    The base weights stay untouched, so `detach_lora` restores the model bit for bit. Returns
    the handle. Raises UserError when no key names a module of the transformer.
    """
    from peft.tuners.lora import LoraModel

    state = load_lora_file(lora) if isinstance(lora, (str, Path)) else lora
    modules = dict(transformer.named_modules())
    linear = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    pairs, unknown = parse_lora(state, linear)
    if not pairs:
        raise UserError(f"none of the LoRA's {len(state)} keys names a Linear layer of this transformer")
    if unknown:
        raise UserError(
            f"{len(unknown)} LoRA keys name no Linear layer of this transformer, e.g. {unknown[0]!r}"
        )
    ranks = {pair.rank for pair in pairs.values()}
    rank = max(ranks)
    pattern = "|".join(re.escape(n) for n in sorted(pairs))
    config = _peft_config(pattern, rank, float(rank), init=False)
    if len(ranks) > 1:
        config.rank_pattern = {re.escape(n): p.rank for n, p in pairs.items()}
        config.alpha_pattern = {re.escape(n): float(p.rank) for n, p in pairs.items()}
    handle = LoraModel(transformer, config, ADAPTER)
    layers = lora_layers(transformer)
    with torch.no_grad():
        for name, pair in pairs.items():
            factor = scale * (pair.alpha if pair.alpha is not None else pair.rank) / pair.rank
            layer = layers[name]
            a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
            a.copy_(pair.down.reshape(a.shape).to(a.dtype))
            b.copy_((pair.up.float().reshape(b.shape) * factor).to(b.dtype))
    return handle


def save_lora(
    path: str | Path, pairs: dict[str, LoraPair], fmt: str = "kohya", meta: dict | None = None
) -> Path:
    """Write `pairs` as safetensors in `fmt` ("kohya": musubi-tuner / ComfyUI; "diffusers")."""
    from safetensors.torch import save

    from framepack.train.checkpoint import atomic_write_bytes

    tensors = to_kohya(pairs) if fmt == "kohya" else to_diffusers(pairs)
    ranks = sorted({p.rank for p in pairs.values()})
    alphas = sorted({p.alpha if p.alpha is not None else p.rank for p in pairs.values()})
    metadata = {
        "ss_network_module": "networks.lora_framepack",
        "ss_network_dim": str(ranks[0] if len(ranks) == 1 else ranks),
        "ss_network_alpha": str(alphas[0] if len(alphas) == 1 else alphas),
        "framepack_format": fmt,
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in (meta or {}).items()},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata))
    return path
