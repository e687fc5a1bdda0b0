"""Training configuration: one frozen dataclass, validated on construction, with named presets.

A config fully determines a run (with its seed): it is saved as `RUN_DIR/config.json` and read
back on `--resume`. Progress is counted in optimizer steps of `batch_size` samples (global,
across all processes).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framepack.codecs.base import CODEC_KINDS
from framepack.errors import UserError
from framepack.models.config import PRESETS as MODEL_PRESETS
from framepack.packing import parse_schedule
from framepack.sampling import PREDICTIONS
from framepack.schema import check_finite, check_types, read_json_object

LAYOUTS = ("forward", "inverted", "endpoints")
DATA_KINDS = ("world", "videos", "latents")
STRATEGIES = ("ddp", "fsdp")
SIGMA_KINDS = ("logit-normal", "uniform")
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class DataConfig:
    """Where clips come from and how they are cut.

    kind:        "world" (the procedural world, scripts drawn from `seeds`), "videos" (a folder)
                 or "latents" (world windows encoded once by a learned codec,
                 framepack.train.latent_cache).
    path:        the video folder for kind "videos", the latent cache for kind "latents".
    size:        frame height and width in pixels (square frames).
    clip_latents: latent frames per training window (besides the start frame).
    seconds:     length of the world's videos; windows are placed anywhere in them, so sections
                 far from the start frame (inverted and endpoints plans of long videos) are seen.
    seed, num_clips: the world's training clips are `WorldClips(split="train", seed=seed,
                 length=num_clips)`: seeds from the training range only (evaluation uses the
                 disjoint "eval" range); for videos, `seed` draws the clip start times.
    fps:         frames per second of the clips.
    """

    kind: str = "world"
    path: str | None = None
    size: int = 64
    clip_latents: int = 16
    seconds: float = 64.0
    seed: int = 0
    num_clips: int = 1_000_000
    fps: int = 30

    def __post_init__(self) -> None:
        check_finite(self, prefix="data.")
        if self.kind not in DATA_KINDS:
            raise ValueError(f"data.kind must be one of {DATA_KINDS}, got {self.kind!r}")
        if self.kind in ("videos", "latents") and not self.path:
            what = "a video folder" if self.kind == "videos" else "a latent cache (framepack codec cache)"
            raise ValueError(f"data.path must name {what} when data.kind is {self.kind!r}")
        _positive(self, ("size", "clip_latents", "num_clips", "fps"), prefix="data.")
        if not self.seconds > 0:
            raise ValueError(f"data.seconds must be > 0, got {self.seconds}")
        if self.seed < 0:
            raise ValueError(f"data.seed must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides its output directory.

    model, model_overrides: a `framepack.models.PRESETS` name and field overrides for it.
    codec:      the codec config dict (`framepack.codecs.base.codec_from_config`); the pixel
                codec's normalisation is fitted on training clips when `fit_codec` is true.
    schedule:   a `framepack.packing` schedule preset name (the context layout).
    window:     latent frames per predicted section (the released models use 9).
    layouts:    training layouts drawn at random per sample (forward / inverted / endpoints).
    history_noise: std of Gaussian noise added to context latents (a drift baseline; 0 = off).
    history_noise_uniform: draw each sample's std uniformly from [0, history_noise] instead
                (diffusion-forcing style: one model for any test-time history noise level).
    history_dropout: probability that a sample sees no history (its history frames become the
                zero padding; the start frame stays): the unconditional branch of history
                guidance (`framepack generate --history-cfg`), as caption dropout is for the prompt.
    discretize_history: K of the history codebook (SPEC sec. 4, framepack.discretize): history
                latents are replaced by their nearest entry of a K-means codebook fitted on
                training latents before step 0 (0 = off, continuous history).
    first_section_share: probability that a sample is the section next to the start frame of
                its video (the first section a forward plan generates from a lone image: no
                motion in the context, so only the prompt tells where the camera goes).
    caption_dropout: probability of an empty prompt per sample (classifier-free guidance).
    text_dim, text_max_tokens: the vocabulary prompt encoder's width and prompt length.
    batch_size: global samples per step; micro_batch: samples per forward (same layout).
    lr, warmup_steps, weight_decay, grad_clip: AdamW with linear warm-up, constant after.
    cooldown_steps: the last `cooldown_steps` steps decay the rate linearly to zero (0 = none):
                "warmup-stable-decay", which gives most of a decaying schedule's gain on short
                runs while leaving the stable phase independent of the run length.
    sigma_kind, sigma_shift, sigma_mean, sigma_std: flow-matching noise-level sampling.
    ema_halflife_samples, ema_rampup: EMA in the EDM2 style (half-life counted in samples).
    steps, log_every, checkpoint_every, keep_checkpoints: run length and cadence (in steps).
    strategy:   "ddp" or "fsdp" for several processes (one process ignores it).
    dtype:      "float32" or "bfloat16" (autocast) compute.
    threads:    torch intra-op threads per process (0 = torch's default). On a shared CPU one
                thread is often fastest; a bit-exact resume needs the same thread count.
    seed:       the seed of the weights' initialisation and of every sample drawn.
    """

    model: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    codec: dict[str, Any] = field(
        default_factory=lambda: {"kind": "pixel", "space_factor": 4, "time_factor": 4}
    )
    fit_codec: bool = True
    schedule: str = "released-f1"
    window: int = 3
    data: DataConfig = field(default_factory=DataConfig)
    layouts: tuple[str, ...] = LAYOUTS
    history_noise: float = 0.0
    history_noise_uniform: bool = False
    history_dropout: float = 0.0
    discretize_history: int = 0
    first_section_share: float = 0.0
    caption_dropout: float = 0.1
    text_dim: int = 64
    text_max_tokens: int = 16
    batch_size: int = 8
    micro_batch: int = 4
    lr: float = 1e-3
    warmup_steps: int = 100
    cooldown_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    prediction: str = "velocity"
    sigma_kind: str = "logit-normal"
    sigma_shift: float = 1.0
    sigma_mean: float = 0.0
    sigma_std: float = 1.0
    ema_halflife_samples: float = 5000.0
    ema_rampup: float | None = 0.05
    steps: int = 1000
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    strategy: str = "ddp"
    dtype: str = "float32"
    threads: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        check_finite(self)
        if self.model not in MODEL_PRESETS:
            raise ValueError(f"model must be one of {', '.join(MODEL_PRESETS)}, got {self.model!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if isinstance(self.data, dict):
            object.__setattr__(self, "data", DataConfig(**self.data))
        object.__setattr__(self, "layouts", tuple(self.layouts))
        # JSON gives lists where Python presets write tuples; keep one spelling so configs compare.
        for name in ("model_overrides", "codec"):
            object.__setattr__(self, name, {k: _tuples(v) for k, v in getattr(self, name).items()})
        _positive(
            self,
            ("window", "text_dim", "text_max_tokens", "batch_size", "micro_batch", "steps"),
            prefix="",
        )
        _positive(self, ("log_every", "checkpoint_every", "keep_checkpoints"), prefix="")
        if not self.layouts or any(lay not in LAYOUTS for lay in self.layouts):
            raise ValueError(f"layouts must be a non-empty subset of {LAYOUTS}, got {self.layouts!r}")
        if self.batch_size % self.micro_batch:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of micro_batch ({self.micro_batch})"
            )
        if self.sigma_kind not in SIGMA_KINDS:
            raise ValueError(f"sigma_kind must be one of {SIGMA_KINDS}, got {self.sigma_kind!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        parse_schedule(self.schedule)  # ValueError naming what is wrong with it
        if not isinstance(self.codec, dict) or self.codec.get("kind") not in CODEC_KINDS:
            kind = self.codec.get("kind") if isinstance(self.codec, dict) else self.codec
            raise ValueError(f"codec 'kind' must be one of {sorted(CODEC_KINDS)}, got {kind!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        for name in ("lr", "sigma_shift", "sigma_std", "ema_halflife_samples"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = torch default), got {self.threads}")
        k = self.discretize_history
        if isinstance(k, bool) or not isinstance(k, int) or k == 1 or k < 0:
            raise ValueError(f"discretize_history must be 0 (off) or a codebook size K >= 2, got {k!r}")
        if not 0 <= self.first_section_share <= 1:
            raise ValueError(f"first_section_share must be in [0, 1], got {self.first_section_share}")
        if not 0 <= self.history_dropout < 1:
            raise ValueError(f"history_dropout must be in [0, 1), got {self.history_dropout}")
        if not isinstance(self.history_noise_uniform, bool):
            raise ValueError(
                f"history_noise_uniform must be true or false, got {self.history_noise_uniform!r}"
            )
        if self.history_noise_uniform and not self.history_noise > 0:
            raise ValueError("history_noise_uniform draws from [0, history_noise]: set history_noise > 0")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        for name in ("history_noise", "weight_decay", "grad_clip", "warmup_steps", "cooldown_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.cooldown_steps > self.steps:
            raise ValueError(f"cooldown_steps ({self.cooldown_steps}) must be at most steps ({self.steps})")
        if self.data.clip_latents < self.window + 1:
            raise ValueError(
                f"data.clip_latents ({self.data.clip_latents}) must be at least window + 1 "
                f"({self.window + 1}) so a section leaves room for context"
            )

    # -- JSON ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values; the later options (`discretize_history`,
        `history_noise_uniform`, `history_dropout`) only when on, so the configs, checkpoints and
        bundles of runs from before them read (and resume) the same."""
        out = dataclasses.asdict(self)
        out["layouts"] = list(self.layouts)
        for name in ("discretize_history", "history_noise_uniform", "history_dropout"):
            if not out[name]:
                del out[name]
        return out

    def resume_settings(self) -> dict[str, Any]:
        """What a checkpoint must have been trained with to be resumed under this config (all
        but the run length, threads and bookkeeping, which a resume may change)."""
        free = {"steps", "cooldown_steps", "threads", "log_every", "checkpoint_every", "keep_checkpoints"}
        return json.loads(json.dumps({k: v for k, v in self.to_dict().items() if k not in free}))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """A config from JSON: every key and type checked (framepack.schema), then the ranges."""
        check_types(cls, raw)
        raw = dict(raw)
        if "data" in raw:
            raw["data"] = DataConfig(**raw["data"])
        return cls(**raw)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def sampling_defaults(self) -> dict[str, Any]:
        """`BundleMeta` fields a bundle of this run sets besides those taken from the training
        settings: none for a trained model; a distilled student's steps, sampler and guidance
        (framepack.distill.config.DistillConfig)."""
        return {}


def load_config(path: Path, config_type: type[TrainConfig] | None = None) -> TrainConfig:
    """Read a JSON config as `config_type` (TrainConfig; a distillation run's DistillConfig);
    user mistakes become `UserError`."""
    config_type = config_type or TrainConfig
    raw = read_json_object(path, "config file", f"{config_type.__name__} fields")
    try:
        return config_type.from_dict(raw)
    except (TypeError, ValueError) as err:
        distill_run = config_type is TrainConfig and "teacher" in raw
        hint = " (a framepack distill run's student is its bundle/ folder)" if distill_run else ""
        raise UserError(f"config file {path}: {err}{hint}") from None


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def _positive(obj: Any, names: tuple[str, ...], prefix: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{prefix}{name} must be an integer >= 1, got {value!r}")


# Named presets. "tiny-test" runs a few steps in seconds (tests); "demo" trains the bundled model
# (framepack/assets/demo) from scratch on the procedural world: about 1 h on 2 CPU cores with
# `torchrun --nproc_per_node 2` (docs/training.md), about 1.9x longer in one process.
PRESETS: dict[str, TrainConfig] = {
    "tiny-test": TrainConfig(
        model="tiny",
        window=2,
        data=DataConfig(size=16, clip_latents=6, num_clips=64, seconds=4.0),
        text_dim=16,
        text_max_tokens=8,
        batch_size=4,
        micro_batch=2,
        warmup_steps=2,
        steps=6,
        log_every=1,
        checkpoint_every=3,
        ema_halflife_samples=50.0,
        threads=1,
    ),
    # 64x64 frames, 8-pixel tokens (pixel codec 4x space, patch 2): 64 tokens per latent, the
    # cost of the earlier 32x32 design with 4-pixel tokens; forward (F1) sections only, a
    # quarter of them next to the start frame, where only the prompt says where the camera goes
    # (docs/training.md, "The third design").
    "demo": TrainConfig(
        model="tiny",
        model_overrides={
            "num_attention_heads": 4,
            "attention_head_dim": 32,
            "rope_axes_dim": (8, 12, 12),
            "rope_theta": 16.0,
            "num_layers": 3,
            "num_single_layers": 3,
            "num_refiner_layers": 1,
        },
        codec={"kind": "pixel", "space_factor": 4, "time_factor": 4},
        schedule="released-f1",
        window=2,
        data=DataConfig(size=64, clip_latents=22, fps=30),
        layouts=("forward",),
        first_section_share=0.25,
        text_dim=64,
        text_max_tokens=16,
        batch_size=16,
        micro_batch=8,
        lr=2e-3,
        warmup_steps=100,
        cooldown_steps=1000,
        sigma_shift=3.0,
        prediction="x0",
        ema_halflife_samples=8000.0,
        dtype="bfloat16",
        steps=6000,
        log_every=10,
        checkpoint_every=100,
        keep_checkpoints=5,
        threads=1,
    ),
}


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise UserError(f"unknown training preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
