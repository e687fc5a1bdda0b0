"""The LoRA training loop: set up, resume, then loop (status, snapshot, step), as in EDM2.

Only the released transformer and the latent cache are loaded: the VAE and the text and image
encoders ran once, in the cache step. The base weights are frozen (bf16 on CUDA); PEFT adapters
and AdamW moments are float32. Checkpoints (framepack.train.checkpoint) hold the adapters, the
optimizer and the RNG states keyed by parameter name, and every sample is keyed by (seed, step,
micro-batch), so `--resume` continues the loss sequence of an uninterrupted run exactly, also on
a different process count (DDP or FSDP2 under torchrun / accelerate launch).

Run directory:
    config.json                 the LoraTrainConfig (plus the cache and transformer folders)
    checkpoints/step-N.*        adapters + optimizer + RNG, written atomically
    log.jsonl, loss.png         one line per step: step, loss, lr, samples, seconds
    lora.safetensors            the LoRA in kohya / musubi-tuner naming (ComfyUI, musubi-tuner)
    lora.diffusers.safetensors  the same LoRA in diffusers / PEFT naming
Both LoRA files load with `framepack generate --lora` and are rewritten at every checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from tqdm import tqdm

from framepack.errors import UserError
from framepack.hunyuan.latent_cache import LatentCache
from framepack.lora_train.adapters import adapter_parameters, attach_lora, pairs_from_state, save_lora
from framepack.lora_train.config import LoraTrainConfig
from framepack.lora_train.samples import LoraSample, check_cache, draw_sample
from framepack.train.checkpoint import (
    Checkpoint,
    atomic_write_json,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from framepack.train.distributed import Distributed, wrap
from framepack.train.loop import RunPaths, _no_sync, learning_rate, read_log, truncate_log
from framepack.train.loss import flow_matching_loss
from framepack.train.plot import plot_loss

# (transformer with adapters, this process's sections, 0-based step) -> the sections trained on
LoraLabeller = Callable[[nn.Module, list[LoraSample], int], list[LoraSample]]
LORA_FILES = {"kohya": "lora.safetensors", "diffusers": "lora.diffusers.safetensors"}


@dataclass(frozen=True)
class Sources:
    """Where a run reads from: the latent cache and the released transformer folder."""

    cache: str
    transformer: str


def locate_transformer(model: str, model_dir: str | None, transformer_dir: str | None) -> str:
    """The released transformer folder of `model`: `transformer_dir`, else found under `model_dir`
    (or the Hugging Face cache) as `framepack generate` finds it."""
    from framepack.hunyuan.paths import TRANSFORMERS_BY_MODEL, _default_cache_roots, find

    if transformer_dir is not None:
        return transformer_dir
    roots = [Path(model_dir)] if model_dir is not None else _default_cache_roots()
    return str(find(TRANSFORMERS_BY_MODEL[model], roots))


def base_dtype(config: LoraTrainConfig, env: Distributed) -> torch.dtype:
    """The frozen base weights' dtype: bf16 on CUDA ("auto"), float32 on the CPU."""
    bf16 = config.dtype == "bf16" or (config.dtype == "auto" and env.device.type == "cuda")
    return torch.bfloat16 if bf16 else torch.float32


def load_base(directory: str, dtype: torch.dtype) -> nn.Module:
    """The released transformer, frozen, in `dtype`, on the CPU."""
    from framepack.models import PackedTransformer

    try:
        model = PackedTransformer.from_pretrained(directory, dtype=dtype)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"could not load the FramePack transformer from {directory}: {err}") from None
    return model.requires_grad_(False)


def check_fit(model: nn.Module, cache: LatentCache, config: LoraTrainConfig) -> None:
    """The cache's tensors and the schedule's kernels must fit the transformer (UserError naming
    the first mismatch)."""
    from framepack.packing import parse_schedule
    from framepack.train.components import schedule_kernels

    cfg, shapes = model.config, cache.shapes()
    missing = [k for k in schedule_kernels(parse_schedule(config.schedule)) if k not in cfg.clean_kernels]
    if config.mode == "general" and missing:
        raise UserError(
            f"schedule {config.schedule!r} needs context levels {missing} the released model lacks"
        )
    wanted = {
        "latents": (0, cfg.in_channels),
        "text_states": (1, cfg.text_embed_dim),
        "pooled": (0, cfg.pooled_projection_dim),
        "image_embeds": (1, cfg.image_proj_dim),
    }
    for name, (axis, size) in wanted.items():
        if shapes[name][axis] != size:
            raise UserError(
                f"the cache's {name} have shape {shapes[name]} but the transformer takes {size} on axis "
                f"{axis}; the cache was made with other encoders than this model's"
            )


def prepare(model: nn.Module, config: LoraTrainConfig, env: Distributed) -> nn.Module:
    """Gradient checkpointing, block streaming (low_vram), adapters; returns the module the step
    calls (DDP around `model`, or `model` sharded in place by FSDP2, with several processes)."""
    model.enable_gradient_checkpointing(config.gradient_checkpointing)
    if config.low_vram:
        from framepack.hunyuan.memory import stream_blocks

        stream_blocks(model, env.device)  # before the adapters: they stay resident and trainable
    else:
        model.to(env.device)
    attach_lora(model, config.spec, seed=config.seed)
    for p in adapter_parameters(model):
        p.data = p.data.to(env.device)
    model.train()
    if config.strategy == "fsdp" and env.world > 1:
        return shard(model)
    return wrap(model, env, config.strategy)


def shard(model: nn.Module) -> nn.Module:
    """FSDP2 (`fully_shard`) per block, the block's float32 adapters as a group of their own (a
    shard group holds one dtype; the frozen base weights stay bf16), then the root."""
    from torch.distributed.fsdp import fully_shard

    from framepack.hunyuan.memory import BLOCK_LISTS

    for name in BLOCK_LISTS:
        for block in getattr(model, name):
            adapters = [m for n, m in block.named_modules() if re.search(r"\.lora_[AB]\.[^.]+$", n)]
            if adapters:
                fully_shard(adapters)
            fully_shard(block)
    fully_shard(model)
    return model


def adapter_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """Full (gathered) adapter weights and optimizer state, keyed by parameter name."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    weights, optim = get_state_dict(model, optimizer, options=options)
    weights = {
        k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu() for k, v in weights.items()
    }
    return weights, optim


def restore(model: nn.Module, optimizer: torch.optim.Optimizer, ckpt: Checkpoint) -> None:
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_state_dict(
        model, optimizer, model_state_dict=ckpt.model, optim_state_dict=ckpt.optimizer, options=options
    )


def lora_step(
    config: LoraTrainConfig,
    env: Distributed,
    wrapped: nn.Module,
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    samples: list[LoraSample],
    step: int,
) -> float:
    """One optimizer step over the global batch (this process's `samples`); returns its mean loss."""
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), dtype=torch.float64)
    scale = env.world / config.batch_size  # the all-reduced mean is the global batch mean
    bf16 = base_dtype(config, env) == torch.bfloat16
    autocast = torch.autocast(env.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    guidance = torch.full((1,), config.guidance * 1000.0, device=env.device)
    for i, sample in enumerate(samples):
        s = sample.to(env.device)
        mask = torch.ones(s.text_states.shape[:2], dtype=torch.bool, device=env.device)

        def velocity(x: Tensor, sigma: Tensor) -> Tensor:
            return wrapped(
                x, sigma * 1000.0, s.text_states, mask, s.pooled, s.target_indices,  # noqa: B023
                context=s.context, image_embeds=s.image_embeds, guidance=guidance,  # noqa: B023
            )  # fmt: skip

        with _no_sync(wrapped, i == len(samples) - 1), autocast:
            per_sample = flow_matching_loss(velocity, s.target, s.noise, s.sigma)  # (1,)
            (per_sample.sum() * scale).backward()
        total += per_sample.detach().double().sum().cpu()
    total = env.all_reduce_sum(total)
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(config, step)  # type: ignore[arg-type]  # same lr fields
    optimizer.step()
    return float(total / config.batch_size)


def write_lora(run: Path, weights: dict[str, Tensor], config: LoraTrainConfig, step: int) -> None:
    pairs = pairs_from_state(weights, config.spec.scale * config.rank)
    meta = {**config.file_meta(), "framepack_steps": str(step)}
    for fmt, name in LORA_FILES.items():
        save_lora(run / name, pairs, fmt, meta)


def start_run(
    config: LoraTrainConfig, paths: RunPaths, sources: Sources, resume: bool, env: Distributed
) -> None:
    """A fresh run writes its config; a resumed one must match the saved settings."""
    if resume and paths.config.is_file():
        saved = json.loads(paths.config.read_text())
        before = type(config).from_dict(saved["config"]).resume_settings()
        changed = sorted(k for k, v in config.resume_settings().items() if before.get(k) != v)
        if changed:
            raise UserError(
                f"--resume: {', '.join(changed)} differ from the run in {paths.root}; only the run length may change"
            )
        return
    if paths.root.exists() and any(paths.root.iterdir()):
        raise UserError(
            f"run directory {paths.root} is not empty; pass --resume to continue it or pick a new --out"
        )
    env.barrier()
    if env.is_main:
        paths.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            paths.config,
            {"config": config.to_dict(), "cache": sources.cache, "transformer": sources.transformer},
        )


def train_lora(
    config: LoraTrainConfig,
    run_dir: str | Path,
    sources: Sources,
    *,
    resume: bool = False,
    progress: bool = True,
    label: LoraLabeller | None = None,
) -> Path:
    """Train (or resume) a LoRA; returns the run directory. See the module docstring.

    label: turns each step's drawn sections into the ones trained on, given the transformer
    with its adapters (distillation: the base model's few-step targets, framepack.distill.lora);
    None trains on the cache's own flow-matching targets."""
    paths, env = RunPaths(Path(run_dir)), Distributed.from_env()
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.batch_size % env.world:
        raise UserError(
            f"batch_size {config.batch_size} cannot be split over {env.world} processes; use a multiple"
        )

    # -- set up ---------------------------------------------------------------------------------
    start_run(config, paths, sources, resume, env)
    cache = LatentCache(sources.cache)
    check_cache(config, cache)
    model = load_base(sources.transformer, base_dtype(config, env))
    check_fit(model, cache, config)
    wrapped = prepare(model, config, env)
    params = adapter_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay)

    # -- resume ---------------------------------------------------------------------------------
    step, elapsed = 0, 0.0
    latest = latest_checkpoint(paths.checkpoints) if resume else None
    if latest is not None:
        ckpt = load_checkpoint(latest, restore_global_rng=True)
        restore(model, optimizer, ckpt)
        step, elapsed = ckpt.step, float(ckpt.state.get("seconds", 0.0))
    if env.is_main:
        truncate_log(paths.log, step)
    env.barrier()

    # -- loop -----------------------------------------------------------------------------------
    history = read_log(paths.log) if env.is_main else []
    bar = tqdm(total=config.steps, initial=step, unit="step", disable=not (progress and env.is_main))
    start_time, start_step = time.perf_counter(), step
    with paths.log.open("a") if env.is_main else contextlib.nullcontext() as log_file:
        while True:
            done = step >= config.steps
            if env.is_main and history and (step % config.log_every == 0 or done):  # status
                bar.set_postfix(
                    loss=f"{sum(r['loss'] for r in history[-config.log_every :]) / len(history[-config.log_every :]):.4f}"
                )
                plot_loss([r["step"] for r in history], [r["loss"] for r in history], paths.plot)
            if step > start_step and (step % config.checkpoint_every == 0 or done):  # snapshot
                snapshot(
                    paths, model, optimizer, config, env, step, elapsed + time.perf_counter() - start_time
                )
            if done:
                break
            mine = range(env.rank, config.batch_size, env.world)  # step
            samples = [draw_sample(config, cache, step, index) for index in mine]
            if label is not None:
                samples = label(model, samples, step)
            loss = lora_step(config, env, wrapped, params, optimizer, samples, step)
            if not math.isfinite(loss):
                raise RuntimeError(f"loss became {loss} at step {step}; lower --lr or check the data")
            step += 1
            if env.is_main:
                row = {"step": step, "loss": loss, "lr": learning_rate(config, step - 1),  # type: ignore[arg-type]
                       "samples": step * config.batch_size, "seconds": round(elapsed + time.perf_counter() - start_time, 3)}  # fmt: skip
                log_file.write(json.dumps(row) + "\n")
                log_file.flush()
                history.append(row)
            bar.update(1)
    bar.close()
    env.barrier()
    return paths.root


def snapshot(
    paths: RunPaths,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: LoraTrainConfig,
    env: Distributed,
    step: int,
    seconds: float,
) -> None:
    """Write a checkpoint and the LoRA files (main process; every process gathers its shards)."""
    weights, optim = adapter_state(model, optimizer)
    if env.is_main:
        state: dict[str, Any] = {"samples": step * config.batch_size, "seconds": round(seconds, 3)}
        save_checkpoint(paths.checkpoints, Checkpoint(step, weights, {}, optim, state))
        prune_checkpoints(paths.checkpoints, config.keep_checkpoints)
        write_lora(paths.root, weights, config, step)
    env.barrier()
