"""Training the causal video autoencoder on the procedural world (`framepack codec train`).

A step draws `batch_size` training-split world clips of `1 + 4 (clip_latents - 1)` frames whose
pans run at any speed in `speed_range` (not only the captions' three), encodes them, adds
`latent_noise` (relative to the latents' std) so the decoder learns to draw from imperfect
latents, decodes, and minimises L1 + MSE on the pixels. AdamW with linear warm-up and a linear
cooldown over the last `cooldown` steps; an EMA of the weights (half-life in samples) is what is
exported. Every random draw of step `s` comes from a generator seeded by `(seed, s)`, and a
checkpoint holds the model, EMA and optimizer, so `--resume` continues the exact run.

Run directory: `config.json` (this config), `log.jsonl` (step, loss, psnr, lr, seconds),
`checkpoints/step-N.{safetensors,json}` (framepack.train.checkpoint), `codec/` (the EMA weights
with the held-out card, written at the end or by `--export`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from framepack.codecs.autoencoder import AutoencoderCodec, AutoencoderConfig, VideoAutoencoder
from framepack.data.world_clips import WorldClips
from framepack.errors import UserError
from framepack.train.checkpoint import (
    Checkpoint,
    atomic_write_json,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from framepack.train.ema import EMA, ema_beta


@dataclass(frozen=True)
class CodecTrainConfig:
    """How to train the autoencoder: frames of `size` x `size` at `fps` (a fully convolutional
    model: training on views smaller than the video's, e.g. 32 for 64-pixel videos, is cropping,
    4x cheaper per clip); the card is measured at `eval_size` (0: `size`)."""

    model: dict[str, Any] = field(default_factory=dict)  # AutoencoderConfig fields
    size: int = 64
    eval_size: int = 0
    fps: float = 30.0
    clip_latents: int = 3
    batch_size: int = 8
    steps: int = 6000
    lr: float = 1e-3
    warmup: int = 100
    cooldown: int = 1000
    grad_clip: float = 1.0
    mse_weight: float = 1.0
    edge_weight: float = 0.0
    motion_weight: float = 0.0
    latent_noise: float = 0.05
    ema_halflife: float = 4000.0  # samples
    speed_range: tuple[float, float] = (0.0, 180.0)  # px/s
    bf16: bool = True
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "speed_range", tuple(float(v) for v in self.speed_range))
        AutoencoderConfig(**self.model)  # validates the architecture
        for name in ("size", "clip_latents", "batch_size", "steps", "log_every", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.size % 8 or self.eval_size % 8 or self.eval_size < 0:
            raise ValueError(f"size and eval_size must be multiples of 8, got {self.size}, {self.eval_size}")
        for name in ("lr", "fps", "ema_halflife"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        lo, hi = self.speed_range
        if not 0 <= lo <= hi:
            raise ValueError(f"speed_range must be (lo, hi) with 0 <= lo <= hi px/s, got {self.speed_range}")

    @property
    def frames(self) -> int:
        return 1 + AutoencoderConfig(**self.model).time_factor * (self.clip_latents - 1)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["speed_range"] = list(self.speed_range)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecTrainConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown codec training settings {sorted(unknown)}")
        return cls(**data)


def draw_batch(config: CodecTrainConfig, step: int) -> Tensor:
    """The training clips of `step`: (batch_size, 3, frames, size, size) in [-1, 1]."""
    clips = WorldClips(
        config.frames,
        config.size,
        config.fps,
        split="train",
        length=1 << 40,
        seed=config.seed,
        script_options={"speed_range": config.speed_range, "min_action": 0.3, "max_action": 1.5},
    )
    rng = np.random.default_rng([config.seed, step, 0xAE])
    return torch.stack([clips[int(i)]["pixels"] for i in rng.integers(0, 1 << 40, config.batch_size)])


def difference_loss(y: Tensor, x: Tensor, dim: int) -> Tensor:
    """L1 between the differences of neighbours along `dim` of `y` and of `x` (a gradient
    difference loss, Mathieu et al. 2016): along H or W it asks for the input's edges, not a blur
    of them; along time for the input's frame-to-frame motion, not a picture that holds still
    inside a latent and jumps at its boundary."""
    return F.l1_loss(y.diff(dim=dim), x.diff(dim=dim))


def loss_fn(model: VideoAutoencoder, pixels: Tensor, config: CodecTrainConfig, g: torch.Generator) -> Tensor:
    """L1 + mse_weight MSE + edge_weight (H and W differences) + motion_weight (frame differences)
    of the reconstruction from latents with relative noise added. pixels (B, 3, F, H, W)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
        z = model.encode(pixels)  # (B, C, T, h, w)
        noise = torch.randn(z.shape, generator=g, dtype=torch.float32).to(z.dtype)
        z = z + config.latent_noise * z.detach().float().std().to(z.dtype) * noise
        y = model.decode(z).float()  # (B, 3, F, H, W)
    loss = F.l1_loss(y, pixels) + config.mse_weight * F.mse_loss(y, pixels)
    if config.edge_weight:
        loss = loss + config.edge_weight * (difference_loss(y, pixels, 3) + difference_loss(y, pixels, 4))
    if config.motion_weight:
        loss = loss + config.motion_weight * difference_loss(y, pixels, 2)
    return loss


def lr_at(config: CodecTrainConfig, step: int) -> float:
    """Linear warm-up, constant, linear cooldown to zero over the last `cooldown` steps."""
    scale = min(1.0, (step + 1) / max(config.warmup, 1))
    if config.cooldown and step >= config.steps - config.cooldown:
        scale *= max(0.0, (config.steps - step) / config.cooldown)
    return config.lr * scale


class Run:
    """The run directory: config, log, checkpoints, exported codec."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.ckpts = out / "checkpoints"

    def start(self, config: CodecTrainConfig, resume: bool, steps: int | None) -> CodecTrainConfig:
        """Write or read `config.json`; `steps` extends or shortens a resumed run."""
        path = self.out / "config.json"
        if resume:
            if not path.is_file():
                raise UserError(
                    f"{self.out} holds no codec training run to resume (no config.json); drop --resume"
                )
            config = CodecTrainConfig.from_dict(json.loads(path.read_text()))
            if steps is not None and steps != config.steps:
                config = dataclasses.replace(config, steps=steps)
                atomic_write_json(path, config.to_dict())
            return config
        if self.out.exists() and any(self.out.iterdir()):
            raise UserError(
                f"{self.out} is not empty; pass --resume to continue that run or choose another --out"
            )
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, config.to_dict())
        return config

    def log(self, row: dict[str, Any]) -> None:
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def drop_log_after(self, step: int) -> None:
        """Forget log rows a killed run wrote after its last checkpoint."""
        path = self.out / "log.jsonl"
        if path.is_file():
            rows = [r for r in path.read_text().splitlines() if r and json.loads(r)["step"] <= step]
            path.write_text("".join(r + "\n" for r in rows))


def train_codec(
    out: str | Path,
    config: CodecTrainConfig | None = None,
    *,
    resume: bool = False,
    steps: int | None = None,
    init: str | Path | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> AutoencoderCodec:
    """Train (or resume) a run in `out`; returns the EMA codec with its held-out card, also saved
    in `out/codec`. `init` (a new run only) starts from the latest EMA weights of another run
    (a finetune: fresh optimizer and schedule). `progress(step, total, row)` is called after
    every logged step."""
    run = Run(Path(out))
    if init is not None and resume:
        raise UserError("--init starts a new run; drop it to --resume this one")
    config = run.start(config or CodecTrainConfig(), resume, steps)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # weight initialisation, without touching the caller's RNG
        model = VideoAutoencoder(AutoencoderConfig(**config.model))
    if init is not None:
        _load_init(model, Path(init), run)
    model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.99), weight_decay=0.0)
    ema = EMA(model)
    start, seconds = _restore(run, model, ema, optimiser)
    run.drop_log_after(start)
    for step in range(start, config.steps):
        t0 = time.perf_counter()
        pixels = draw_batch(config, step).contiguous(memory_format=torch.channels_last_3d)
        for group in optimiser.param_groups:
            group["lr"] = lr_at(config, step)
        g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        loss = loss_fn(model, pixels, config, g)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimiser.step()
        samples = (step + 1) * config.batch_size
        ema.update(model, ema_beta(samples, config.batch_size, config.ema_halflife))
        seconds += time.perf_counter() - t0
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            row = {
                "step": done,
                "loss": round(loss.item(), 6),
                "lr": lr_at(config, step),
                "seconds": round(seconds, 1),
            }
            run.log(row)
            if progress:
                progress(done, config.steps, row)
        if done % config.checkpoint_every == 0 or done == config.steps:
            state = {"samples": samples, "seconds": seconds, "settings": config.to_dict()}
            save_checkpoint(
                run.ckpts,
                Checkpoint(done, model.state_dict(), ema.state_dict(), optimiser.state_dict(), state),
            )
            prune_checkpoints(run.ckpts, config.keep_checkpoints)
    return export_codec(run.out)


def _load_init(model: VideoAutoencoder, init: Path, run: Run) -> None:
    """Load the latest EMA weights of run `init` (recorded in `run`'s `init.json`)."""
    path = latest_checkpoint(init / "checkpoints")
    if path is None:
        raise UserError(f"--init {init}: no codec training checkpoint there")
    try:
        model.load_state_dict(load_checkpoint(path).ema)
    except RuntimeError as err:
        raise UserError(f"--init {init}: its weights do not fit this config's model ({err})") from None
    if not (run.out / "init.json").is_file():
        atomic_write_json(run.out / "init.json", {"init": str(init), "checkpoint": path.name})


def _restore(
    run: Run, model: VideoAutoencoder, ema: EMA, optimiser: torch.optim.Optimizer
) -> tuple[int, float]:
    """Load the latest checkpoint of the run, if any: (first step to run, training seconds so far)."""
    path = latest_checkpoint(run.ckpts)
    if path is None:
        return 0, 0.0
    ckpt = load_checkpoint(path)
    model.load_state_dict(ckpt.model)
    ema.load_state_dict(ckpt.ema)
    optimiser.load_state_dict(ckpt.optimizer)
    return ckpt.step, float(ckpt.state.get("seconds", 0.0))


def export_codec(out: str | Path, eval_clips: int = 16, eval_seconds: float = 2.0) -> AutoencoderCodec:
    """The run's latest EMA weights as a codec in `out/codec`, with its held-out card measured
    (framepack.eval.codec) and the training summary."""
    from framepack.eval.codec import codec_card

    run = Run(Path(out))
    path = latest_checkpoint(run.ckpts)
    if path is None:
        raise UserError(
            f"{run.out} has no checkpoint yet; train first (framepack codec train --out {run.out})"
        )
    config = CodecTrainConfig.from_dict(json.loads((run.out / "config.json").read_text()))
    ckpt = load_checkpoint(path)
    model = VideoAutoencoder(AutoencoderConfig(**config.model))
    model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in ckpt.ema.items()})
    with torch.no_grad():
        z = model.encode(draw_batch(config, 10**9))  # scale latents to unit variance, as the VAE's
    codec = AutoencoderCodec(model, 1.0 / float(z.std()))
    size = config.eval_size or config.size
    card = codec_card(codec, clips=eval_clips, seconds=eval_seconds, size=size, fps=config.fps)
    card["training"] = {
        "steps": ckpt.step,
        "samples": ckpt.state.get("samples"),
        "minutes": round(ckpt.state.get("seconds", 0) / 60, 1),
    }
    codec.card = card
    codec.save(run.out / "codec")
    codec.path = str(run.out / "codec")
    return codec
