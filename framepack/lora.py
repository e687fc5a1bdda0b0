"""LoRA for the HunyuanVideo / FramePack transformer: merge into the weights and unmerge.

Two key namings are read:

- diffusers / PEFT: `transformer.<module>.lora_A.weight`, `transformer.<module>.lora_B.weight`
  (optional `<module>.alpha`; prefixes `transformer.`, `diffusion_model.`, `base_model.model.`
  or none);
- kohya / musubi-tuner: `lora_unet_<module with dots as underscores>.lora_down.weight`,
  `.lora_up.weight`, `.alpha`.

Merging adds `scale * alpha / rank * (B @ A)` to each target weight (alpha defaults to rank);
Linear and Conv layers alike (the product is reshaped to the weight). The delta is computed in
float32 and added in the weight's dtype; unmerging subtracts the same delta, exact in float32 and
within rounding in bf16. Keys naming no module of the model are reported, not applied (LoRAs for
the original HunyuanVideo names, e.g. `double_blocks_0_img_attn_qkv`, land there).

Writing (`to_kohya`, `to_diffusers`, `convert_lora`): the FramePack LoRAs of musubi-tuner
(`networks.lora_framepack`) are kohya-named over the diffusers module names, e.g.
`lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight` with a scalar `.alpha`; ComfyUI's
FramePack wrappers read those and the diffusers / PEFT naming
`transformer.transformer_blocks.0.attn.to_q.lora_A.weight`, which carries no alpha (scale 1), so
`to_diffusers` folds `alpha / rank` into `lora_B`. Turning kohya names back into module names
needs the model's module list (underscores are ambiguous): `released_module_names()`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from framepack.errors import UserError

PREFIXES = ("transformer.", "diffusion_model.", "base_model.model.", "model.")
KOHYA_PREFIXES = ("lora_unet_", "lora_transformer_")
log = logging.getLogger(__name__)
_DIFFUSERS = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B)(?:\.default)?\.weight$")
_KOHYA = re.compile(r"^(?P<module>[^.]+)\.(?P<kind>lora_down|lora_up)\.weight$")
_ALPHA = re.compile(r"^(?P<module>.+)\.alpha$")


@dataclass
class LoraPair:
    """One target module's factors: down (rank, in...) and up (out, rank...)."""

    down: Tensor
    up: Tensor
    alpha: float | None = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


@dataclass
class AppliedLora:
    """What `merge_lora` did: the factors merged (kept to undo it) and the keys it could not use."""

    pairs: dict[str, LoraPair] = field(default_factory=dict)  # module name -> merged factors
    unknown_keys: list[str] = field(default_factory=list)
    scale: float = 1.0

    @property
    def modules(self) -> list[str]:
        return sorted(self.pairs)


def load_lora_file(path: str | Path) -> dict[str, Tensor]:
    """Read a LoRA safetensors file (UserError if missing or unreadable)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"LoRA file {path} does not exist")
    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own error types
        raise UserError(f"could not read LoRA file {path} as safetensors: {err}") from err


def parse_lora(state: dict[str, Tensor], module_names: list[str]) -> tuple[dict[str, LoraPair], list[str]]:
    """Group `state` by target module of a model whose modules are `module_names`.

    Returns {module name: LoraPair} and the keys that match no module or are incomplete.
    """
    names = set(module_names)
    by_underscore = {n.replace(".", "_"): n for n in module_names}
    parts: dict[str, dict[str, object]] = {}
    unknown: list[str] = []

    def target(raw: str) -> str | None:
        for prefix in KOHYA_PREFIXES:
            if raw.startswith(prefix) and "." not in raw:
                return by_underscore.get(raw.removeprefix(prefix))
        for prefix in ("", *PREFIXES):
            if raw.startswith(prefix) and raw.removeprefix(prefix) in names:
                return raw.removeprefix(prefix)
        return None

    for key, tensor in state.items():
        match = _DIFFUSERS.match(key) or _KOHYA.match(key)
        if match is not None:
            kind = "down" if match["kind"] in ("lora_A", "lora_down") else "up"
        elif (match := _ALPHA.match(key)) is not None:
            kind = "alpha"
        else:
            unknown.append(key)
            continue
        module = target(match["module"])
        if module is None:
            unknown.append(key)
            continue
        parts.setdefault(module, {})[kind] = tensor

    pairs = {}
    for module, got in parts.items():
        if "down" not in got or "up" not in got:
            unknown.append(
                f"{module} (missing {'lora_A/lora_down' if 'down' not in got else 'lora_B/lora_up'})"
            )
            continue
        alpha = got.get("alpha")
        pairs[module] = LoraPair(got["down"], got["up"], None if alpha is None else float(alpha))
    return pairs, sorted(unknown)


def lora_delta(pair: LoraPair, weight_shape: torch.Size, scale: float) -> Tensor:
    """scale * alpha / rank * (up @ down), reshaped to `weight_shape`, float32."""
    up = pair.up.float().flatten(1)  # (out, rank)
    down = pair.down.float().flatten(1)  # (rank, in * kernel)
    if up.shape[1] != down.shape[0]:
        raise ValueError(f"LoRA rank mismatch: up {tuple(pair.up.shape)} vs down {tuple(pair.down.shape)}")
    delta = up @ down
    if delta.numel() != torch.Size(weight_shape).numel() or delta.shape[0] != weight_shape[0]:
        raise ValueError(f"LoRA product {tuple(delta.shape)} does not fit weight {tuple(weight_shape)}")
    alpha = pair.alpha if pair.alpha is not None else pair.rank
    return (scale * alpha / pair.rank) * delta.reshape(weight_shape)


@torch.no_grad()
def merge_lora(model: nn.Module, lora: dict[str, Tensor] | str | Path, scale: float = 1.0) -> AppliedLora:
    """Add a LoRA to `model`'s weights in place; returns what to pass to `unmerge_lora`.

    Raises UserError if no key of the LoRA matches a module of the model.
    """
    state = load_lora_file(lora) if isinstance(lora, (str, Path)) else lora
    modules = dict(model.named_modules())
    pairs, unknown = parse_lora(
        state, [n for n, m in modules.items() if getattr(m, "weight", None) is not None]
    )
    if not pairs:
        raise UserError(
            f"none of the LoRA's {len(state)} keys names a module of this model (e.g. {next(iter(state), '-')!r}); "
            "expected diffusers (transformer.<module>.lora_A.weight) or kohya (lora_unet_<module>.lora_down.weight) names"
        )
    applied = AppliedLora(unknown_keys=unknown, scale=scale)
    for name, pair in pairs.items():  # check every shape before changing anything
        try:
            lora_delta(pair, modules[name].weight.shape, 0.0)
        except ValueError as err:
            raise UserError(f"LoRA for {name}: {err}") from err
    for name, pair in pairs.items():
        _add(modules[name].weight, lora_delta(pair, modules[name].weight.shape, scale))
        applied.pairs[name] = pair
    return applied


def _add(weight: Tensor, delta: Tensor) -> None:
    """weight += delta in place (in float32), so views of the storage (streamed blocks) see it."""
    w = weight.data
    w.copy_((w.float() + delta.to(w.device)).to(w.dtype))


@torch.no_grad()
def unmerge_lora(model: nn.Module, applied: AppliedLora) -> None:
    """Subtract what `merge_lora` added (recomputed from the kept factors)."""
    modules = dict(model.named_modules())
    for name, pair in applied.pairs.items():
        weight = modules[name].weight
        _add(weight, -lora_delta(pair, weight.shape, applied.scale))
    applied.pairs.clear()


def parse_lora_arg(text: str) -> tuple[str, float]:
    """`"PATH"` or `"PATH:SCALE"` -> (path, scale); a tail that is not a number belongs to the path.

    Raises UserError for a scale that is not a finite number.
    """
    path, scale = text, 1.0
    head, sep, tail = text.rpartition(":")
    if sep and head:
        with contextlib.suppress(ValueError):
            path, scale = head, float(tail)
    if not math.isfinite(scale):
        raise UserError(f"--lora {text}: the scale must be a finite number, e.g. {path}:0.8")
    return path, scale


def check_lora_args(loras: list[str]) -> None:
    """Before anything loads: every `--lora` names an existing file with a finite scale."""
    for text in loras:
        path, _ = parse_lora_arg(text)
        head, _, tail = text.rpartition(":")
        if not Path(path).is_file() and head and Path(head).is_file():
            raise UserError(f"--lora {text}: {tail!r} is not a scale; give a number, e.g. {head}:0.8")
        if not Path(path).is_file():
            raise UserError(f"--lora {text}: no such file: {path}")


def apply_loras(model: nn.Module, loras: list[str]) -> list[AppliedLora]:
    """Merge `--lora PATH[:SCALE]` arguments into `model` in order (UserError when one does not fit)."""
    applied = []
    for text in loras:
        path, scale = parse_lora_arg(text)
        lora = merge_lora(model, path, scale)
        log.info("LoRA %s (scale %g): %d modules merged", path, scale, len(lora.pairs))
        if lora.unknown_keys:
            log.warning("LoRA %s: %d keys name no module of the model", path, len(lora.unknown_keys))
        applied.append(lora)
    return applied


# ----------------------------------------------------------------------------- writing


def to_kohya(pairs: dict[str, LoraPair], prefix: str = "lora_unet_") -> dict[str, Tensor]:
    """kohya / musubi-tuner naming: `lora_unet_<module_with_underscores>.lora_down.weight`,
    `.lora_up.weight` and a float32 scalar `.alpha` (the rank when the pair has none)."""
    out: dict[str, Tensor] = {}
    for module, pair in sorted(pairs.items()):
        name = prefix + module.replace(".", "_")
        out[f"{name}.lora_down.weight"] = pair.down.contiguous()
        out[f"{name}.lora_up.weight"] = pair.up.contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(pair.alpha if pair.alpha is not None else pair.rank))
    return out


def to_diffusers(pairs: dict[str, LoraPair], prefix: str = "transformer.") -> dict[str, Tensor]:
    """diffusers / PEFT naming: `<prefix><module>.lora_A.weight` (down) and `.lora_B.weight`
    (up times alpha / rank, computed in float32: the files carry no alpha)."""
    out: dict[str, Tensor] = {}
    for module, pair in sorted(pairs.items()):
        scale = 1.0 if pair.alpha is None else pair.alpha / pair.rank
        up = pair.up if scale == 1.0 else (pair.up.float() * scale).to(pair.up.dtype)
        out[f"{prefix}{module}.lora_A.weight"] = pair.down.contiguous()
        out[f"{prefix}{module}.lora_B.weight"] = up.contiguous()
    return out


FORMATS = ("kohya", "diffusers")


def convert_lora(state: dict[str, Tensor], to: str, module_names: list[str]) -> dict[str, Tensor]:
    """Rewrite a LoRA (either naming) in `to` = "kohya" or "diffusers" naming for a model whose
    modules are `module_names`. Raises UserError when a key names no module (nothing is dropped)."""
    if to not in FORMATS:
        raise UserError(f"LoRA format must be one of {', '.join(FORMATS)}, got {to!r}")
    pairs, unknown = parse_lora(state, module_names)
    if unknown:
        raise UserError(
            f"{len(unknown)} LoRA keys name no module of the model (e.g. {unknown[0]!r}); nothing converted"
        )
    return to_kohya(pairs) if to == "kohya" else to_diffusers(pairs)


def released_module_names() -> list[str]:
    """Names of the weighted modules of the released 13B transformer (built on the meta device)."""
    from framepack.models import PRESETS, PackedTransformer

    with torch.device("meta"):
        model = PackedTransformer(PRESETS["hunyuan-13b"])
    return [n for n, m in model.named_modules() if getattr(m, "weight", None) is not None]
