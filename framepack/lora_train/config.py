"""The LoRA training configuration: one frozen dataclass, validated on construction.

Saved as `RUN_DIR/config.json` and read back on `--resume` (which may change only the run
length and bookkeeping: `steps`, `cooldown_steps`, `checkpoint_every`, `keep_checkpoints`,
`log_every`, `threads`). Progress is counted in optimizer steps of `batch_size` sections, one
section per forward pass, the batch split over the processes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from framepack.lora_train.adapters import TARGETS, LoraSpec
from framepack.packing import parse_schedule
from framepack.schema import check_finite, check_types

MODELS = {"hunyuan-inverted": "inverted", "hunyuan-f1": "forward"}  # model -> its released layout
MODES = ("released", "general")
LAYOUTS = ("forward", "inverted", "endpoints")
SIGMA_KINDS = ("logit-normal", "uniform")
DTYPES = ("auto", "bf16", "fp32")
STRATEGIES = ("ddp", "fsdp")
FREE_ON_RESUME = ("steps", "cooldown_steps", "checkpoint_every", "keep_checkpoints", "log_every", "threads")


@dataclass(frozen=True)
class LoraTrainConfig:
    """A LoRA run on a released model.

    model:     "hunyuan-inverted" or "hunyuan-f1".
    mode:      "released": sections in the released index layouts (`framepack.plans`, mode
               "released"), exactly what `framepack generate` feeds the model; "general": true
               frame times, packed with `schedule` in `layouts` (framepack.train.layouts).
    layouts:   the section layouts drawn per sample (empty: the model's own, inverted or forward;
               released mode takes "inverted" or "forward").
    schedule:  general mode's packing schedule (its kernels must be the released 1x/2x/4x).
    window:    latent frames per section (released: 9).
    rank, alpha, targets, dropout: the adapters (framepack.lora_train.adapters.LoraSpec).
    steps, batch_size, lr, warmup_steps, cooldown_steps, weight_decay, grad_clip: optimisation
               (AdamW; warm-up, constant, optional linear cool-down: framepack.train.loop).
    sigma_*:   the training noise levels (framepack.train.loss.sample_sigmas).
    guidance:  the distilled-guidance value fed to the model (released sampling: 10).
    history_noise: std of Gaussian noise on the context latents (Sec. 4's baseline; 0 = off).
    dtype:     base weights: "auto" (bf16 on CUDA, fp32 on the CPU), "bf16", "fp32"; the
               adapters and optimizer stay float32.
    gradient_checkpointing: recompute each block in backward (memory ~ one block of activations).
    low_vram:  keep the blocks in CPU memory and stream each to the GPU for its forward
               (framepack.hunyuan.memory.stream_blocks); needs gradient checkpointing.
    strategy:  several processes: "ddp" (replicated) or "fsdp" (FSDP2, sharded).
    """

    model: str = "hunyuan-inverted"
    mode: str = "released"
    layouts: tuple[str, ...] = ()
    schedule: str = "released-inverted"
    window: int = 9
    rank: int = 32
    alpha: float | None = None
    targets: str = "attn-mlp"
    dropout: float = 0.0
    steps: int = 1000
    batch_size: int = 1
    lr: float = 1e-4
    warmup_steps: int = 0
    cooldown_steps: int = 0
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    sigma_kind: str = "logit-normal"
    sigma_shift: float = 3.0
    sigma_mean: float = 0.0
    sigma_std: float = 1.0
    guidance: float = 10.0
    history_noise: float = 0.0
    dtype: str = "auto"
    gradient_checkpointing: bool = True
    low_vram: bool = False
    strategy: str = "ddp"
    seed: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    threads: int = 0

    def __post_init__(self) -> None:
        check_finite(self)
        object.__setattr__(self, "layouts", tuple(self.layouts) or (MODELS.get(self.model, "inverted"),))
        _choice("model", self.model, tuple(MODELS))
        _choice("mode", self.mode, MODES)
        _choice("sigma_kind", self.sigma_kind, SIGMA_KINDS)
        _choice("dtype", self.dtype, DTYPES)
        _choice("strategy", self.strategy, STRATEGIES)
        allowed = ("inverted", "forward") if self.mode == "released" else LAYOUTS
        for layout in self.layouts:
            _choice(f"layouts ({self.mode} mode)", layout, allowed)
        parse_schedule(self.schedule)  # ValueError naming the problem
        self.spec  # noqa: B018 (validates rank, alpha, targets, dropout)
        for name in ("window", "steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "warmup_steps",
            "cooldown_steps",
            "weight_decay",
            "grad_clip",
            "history_noise",
            "threads",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0 or not self.sigma_shift > 0 or not self.sigma_std > 0:
            raise ValueError(
                f"lr, sigma_shift and sigma_std must be > 0, got {self.lr}, {self.sigma_shift}, {self.sigma_std}"
            )
        if self.low_vram and not self.gradient_checkpointing:
            raise ValueError("low_vram streams blocks per forward and needs gradient_checkpointing")

    @property
    def spec(self) -> LoraSpec:
        return LoraSpec(self.rank, self.alpha, self.targets, self.dropout)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "layouts": list(self.layouts)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LoraTrainConfig:
        check_types(cls, raw)  # every key and type (framepack.schema), then the ranges
        return cls(**{**raw, "layouts": tuple(raw.get("layouts", ()))})

    def replace(self, **changes: Any) -> LoraTrainConfig:
        return dataclasses.replace(self, **changes)

    def resume_settings(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run it continues."""
        return {k: v for k, v in self.to_dict().items() if k not in FREE_ON_RESUME}

    def file_meta(self) -> dict[str, str]:
        """What the LoRA files' safetensors metadata records of the run (a distilled student
        adds its sampling steps: framepack.distill.lora)."""
        return {"framepack_model": self.model, "framepack_mode": self.mode}


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


__all__ = ["MODELS", "TARGETS", "LoraTrainConfig"]
