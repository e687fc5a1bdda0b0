"""The training loop: set up, resume, then loop (status, snapshot, step), as in EDM2.

One model learns the forward, inverted and endpoints layouts (framepack.train.layouts) with
the flow-matching loss (framepack.train.loss). Progress is counted in optimizer steps of
`config.batch_size` samples. Everything a step draws is keyed by (seed, step, micro-batch), and
checkpoints hold the model, EMA, optimizer and RNG states, so `--resume` reproduces the loss
sequence of an uninterrupted run bit for bit (same hardware, process count and threads).

Run directory:
    config.json            the resolved TrainConfig
    model/                 the initial model as a bundle (architecture, codec, vocabulary; the
                           history codebook with `discretize_history`, fitted before step 0)
    checkpoints/step-N.*   safetensors + JSON, written atomically every `checkpoint_every` steps
    log.jsonl              one line per step: step, loss, lr, samples, seconds (of training,
                           summed over resumed sessions; the time since the last checkpoint of
                           a stopped session is not counted)
    loss.png               the loss curve (refreshed at every status)
    bundle/                the EMA weights as a model bundle, written at the end
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)
from tqdm import tqdm

from framepack.codecs.base import Codec, codec_from_config
from framepack.discretize import Codebook, fit_codebook
from framepack.disk import atomic_path
from framepack.errors import UserError
from framepack.model_bundle import BundleMeta, is_bundle, load_bundle, load_meta, save_bundle
from framepack.models import PackedTransformer
from framepack.text.vocab import VocabEncoder, VocabEncoderConfig, Vocabulary
from framepack.train.checkpoint import (
    Checkpoint,
    atomic_write_json,
    check_settings,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from framepack.train.components import Denoiser, build_denoiser, schedule_kernels, schedule_of, seeded
from framepack.train.config import TrainConfig, load_config
from framepack.train.data import ClipSource, MicroBatch, draw_micro_batches, history_sample, make_source
from framepack.train.distributed import Distributed, wrap
from framepack.train.ema import EMA, ema_beta
from framepack.train.loss import flow_matching_loss
from framepack.train.plot import plot_loss

CODEC_FIT_CLIPS = 32  # training clips used to fit the pixel codec's normalisation
VOCAB_SCRIPTS = 4000  # training scripts whose captions make the vocabulary


@dataclass
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def plot(self) -> Path:
        return self.root / "loss.png"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"


def learning_rate(config: TrainConfig, step: int) -> float:
    """The rate of 0-based `step`: linear warm-up over `warmup_steps`, constant, then (with
    `cooldown_steps`) a linear decay to zero over the run's last steps ("warmup-stable-decay").

    The stable phase does not depend on the run length, so a run can be extended with
    `--resume --steps N` as long as its cooldown has not started."""
    scale = 1.0 if config.warmup_steps == 0 else min(1.0, (step + 1) / config.warmup_steps)
    if config.cooldown_steps:
        scale = min(scale, (config.steps - step) / config.cooldown_steps)
    return config.lr * max(scale, 0.0)


# ---------------------------------------------------------------------------------------------
# Set-up helpers
# ---------------------------------------------------------------------------------------------


def fit_codec(config: TrainConfig, source: ClipSource) -> Codec:
    """The configured codec; the pixel codec's normalisation is fitted on the first clips."""
    codec = codec_from_config(dict(config.codec))
    if config.fit_codec and hasattr(codec, "fit_normalisation"):
        frames = list(range(min(source.num_frames, 33)))
        clips = (source.frames(i, frames)[0] for i in range(min(CODEC_FIT_CLIPS, len(source))))
        codec = codec.fit_normalisation(clips)
    return codec


def max_latent_index(config: TrainConfig) -> int:
    """The largest latent index a training window reaches (world: videos of `data.seconds`)."""
    codec = codec_from_config(dict(config.codec))
    if config.data.kind == "videos":
        return config.data.clip_latents
    frames = max(1, round(config.data.seconds * config.data.fps))
    return (frames - 1) // codec.time_factor


def bundle_meta(config: TrainConfig, step: int = 0, card: dict[str, Any] | None = None) -> BundleMeta:
    """The bundle settings of a run at `step` (a distilled student's sampling defaults on top)."""
    fields: dict[str, Any] = dict(
        fps=config.data.fps,
        height=config.data.size,
        width=config.data.size,
        window=config.window,
        schedule=config.schedule,
        layouts=config.layouts,
        default_plan="inverted" if "inverted" in config.layouts else config.layouts[0],
        shift=config.sigma_shift,
        max_latent_index=max_latent_index(config),
        prediction=config.prediction,
        history_codebook=config.discretize_history or None,
        model_card=dict(card or {}),
        training={"config": config.to_dict(), "steps": step, "samples": step * config.batch_size},
    )
    return BundleMeta(**{**fields, **config.sampling_defaults()})


def load_init(
    path: Path, config: TrainConfig, source: ClipSource, add_levels: Sequence[tuple[int, int, int]]
) -> tuple[Denoiser, Codec, Codebook | None]:
    """The model and codec to finetune from.

    path: a run directory (its latest EMA weights), a model bundle, or a diffusers-format
    transformer directory (config.json + safetensors, e.g. a released one); for the latter the
    codec and a fresh vocabulary prompt encoder (sized to the transformer's text widths) are
    built from `config`. New context levels in `add_levels` are initialised from the existing
    projections (`PackedTransformer.add_clean_level`). The history codebook of a bundle or run
    trained with one is returned with them (None otherwise).
    """
    run_dir = _is_run_dir(path)
    codebook = None
    if run_dir or is_bundle(path):
        bundle = load_bundle(path / "model" if run_dir else path)
        model = Denoiser(bundle.transformer.train(), bundle.text_encoder.train(), bundle.meta.prediction)
        codec, codebook = bundle.codec, bundle.codebook
        if run_dir:  # its latest EMA weights
            ckpt = latest_checkpoint(path / "checkpoints")
            if ckpt is None:
                raise UserError(
                    f"run directory {path} has no checkpoint yet; pass a bundle or a finished run"
                )
            model.load_state_dict(load_checkpoint(ckpt).ema)
    elif (path / "config.json").is_file():
        try:
            transformer = PackedTransformer.from_pretrained(path, dtype=torch.float32).train()
        except (FileNotFoundError, ValueError) as err:
            raise UserError(f"--init {path}: {err}") from None
        codec = fit_codec(config, source)
        tc = transformer.config
        if tc.in_channels != codec.latent_channels:
            raise UserError(
                f"--init {path}: the transformer takes {tc.in_channels} latent channels, the codec "
                f"{config.codec} makes {codec.latent_channels}; use the codec it was trained with"
            )
        text = VocabEncoderConfig(width=tc.text_embed_dim, pooled_width=tc.pooled_projection_dim, layers=1,
                                  heads=4 if tc.text_embed_dim % 4 == 0 else 1, max_length=config.text_max_tokens)  # fmt: skip
        with seeded(config.seed):
            text_encoder = VocabEncoder(Vocabulary.build(source.captions(VOCAB_SCRIPTS)), text)
        model = Denoiser(transformer, text_encoder, config.prediction)
    else:
        raise UserError(
            f"--init {path}: not a run directory, a model bundle (framepack.json) or a diffusers "
            "transformer folder (config.json + safetensors)"
        )
    for kernel in add_levels:
        model.transformer.add_clean_level(tuple(kernel))
    head = int(config.model_overrides.get("head_hidden", 0))
    have = model.transformer.config.head_hidden
    if head and not have:  # a finetune that adds the MLP head (starts as the linear one)
        with seeded(config.seed):
            model.transformer.add_output_mlp(head)
    elif head != have:
        raise UserError(
            f"--init {path}: the model's output MLP is {have} wide, the config asks for {head}; "
            f"set model_overrides.head_hidden to {have}"
        )
    return model, codec, codebook


def _is_run_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model").is_dir()


def inherit_discretization(config: TrainConfig, init: str | Path | None, say: bool = True) -> TrainConfig:
    """A finetune keeps the history codebook of the model it starts from (`--init` of a bundle
    or run trained with `--discretize-history K`): the config takes its K; another K is refused."""
    if init is None:
        return config
    path = Path(init)
    bundle = path / "model" if _is_run_dir(path) else path
    if not is_bundle(bundle):
        return config
    have = load_meta(bundle).history_codebook
    if have is None or config.discretize_history == have:
        return config
    if config.discretize_history:
        raise UserError(
            f"--init {init} was trained with --discretize-history {have}, not "
            f"{config.discretize_history}; drop the flag to keep its codebook (or pass {have})"
        )
    if say:
        print(f"history discretized as --init {init} was: its codebook of K = {have}")
    return config.replace(discretize_history=have)


def history_codebook(config: TrainConfig, source: ClipSource, codec: Codec) -> Codebook:
    """The run's history codebook: K-means (seeded by `config.seed`) over latent vectors of
    training history drawn from the run's own data (framepack.train.data.history_sample)."""
    k = config.discretize_history
    try:
        return fit_codebook(history_sample(config, source, codec), k, seed=config.seed).codebook
    except ValueError as err:
        raise UserError(f"--discretize-history {k}: {err}") from None


def check_kernels(model: Denoiser, config: TrainConfig) -> None:
    have = set(model.transformer.config.clean_kernels)
    missing = [k for k in schedule_kernels(schedule_of(config)) if k not in have]
    if missing:
        spec = " ".join("--add-level " + ",".join(map(str, k)) for k in missing)
        raise UserError(
            f"schedule {config.schedule!r} needs context levels {missing} the model lacks; add {spec}"
        )


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut by a kill
            rows.append(json.loads(line))
    return rows


def truncate_log(path: Path, step: int) -> None:
    """Keep only log lines up to `step` (a killed run may have logged past its checkpoint)."""
    rows = [r for r in read_log(path) if r["step"] <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))


def full_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """Full (unsharded) model and optimizer state dicts, keyed by parameter names."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(module, optimizer, options=options)


def full_tensors(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Gather DTensors (FSDP shards) into ordinary CPU tensors."""
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu() for k, v in state.items()}


# ---------------------------------------------------------------------------------------------
# One step
# ---------------------------------------------------------------------------------------------


def _no_sync(wrapped: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip gradient all-reduce on all but the last backward of a step."""
    if sync:
        return contextlib.nullcontext()
    if hasattr(wrapped, "no_sync"):
        return wrapped.no_sync()
    if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2

        @contextlib.contextmanager
        def paused():
            wrapped.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                wrapped.set_requires_gradient_sync(True)

        return paused()
    return contextlib.nullcontext()


def draw_step(
    config: TrainConfig,
    env: Distributed,
    source: ClipSource,
    codec: Codec,
    step: int,
    codebook: Codebook | None = None,
) -> list[MicroBatch]:
    """This process's share of the step's global batch: micro-batches rank, rank + world, ...
    (history discretized by `codebook` when the run has one)."""
    schedule = schedule_of(config)
    micro_count = config.batch_size // config.micro_batch
    mine = range(env.rank, micro_count, env.world)
    return [
        mb
        for index in mine
        for mb in draw_micro_batches(config, source, codec, schedule, step, index, quantize=codebook)
    ]


def train_step(
    config: TrainConfig,
    env: Distributed,
    wrapped: nn.Module,
    model: Denoiser,
    optimizer: torch.optim.Optimizer,
    batches: list[MicroBatch],
    step: int,
) -> float:
    """One optimizer step over the global batch (this process's `batches`); returns the global
    mean loss."""
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), dtype=torch.float64)
    # Every backward weighs a sample by world / batch_size, so the all-reduced (averaged)
    # gradient is the mean over the global batch, whatever the process count.
    scale = env.world / config.batch_size
    params = [p for p in model.parameters() if p.requires_grad]
    sharded = config.strategy == "fsdp" and env.world > 1  # FSDP2 handles unused parameters itself
    autocast = (
        torch.autocast(env.device.type, dtype=torch.bfloat16)
        if config.dtype == "bfloat16"
        else contextlib.nullcontext()
    )
    for i, mb in enumerate(batches):
        ids, mask = model.text_encoder.tokenize_batch(mb.captions)
        ids, mask = ids.to(env.device), mask.to(env.device)
        context = mb.context.to(env.device)
        indices = mb.target_indices.to(env.device)

        def velocity(x: Tensor, sigma: Tensor) -> Tensor:
            return wrapped(x, sigma, ids, mask, indices, context)  # noqa: B023

        with _no_sync(wrapped, i == len(batches) - 1), autocast:
            per_sample = flow_matching_loss(
                velocity, mb.target.to(env.device), mb.noise.to(env.device), mb.sigma.to(env.device)
            )  # (m,)
            loss = per_sample.sum() * scale
            if not sharded:
                # A zero-weight touch of every parameter keeps the graph the same whatever the
                # layout (a level absent from a sample still gets a zero gradient), as DDP
                # requires; one process does the same so both follow the same AdamW updates.
                loss = loss + sum(p.flatten()[0] for p in params) * 0.0
            loss.backward()
        total += per_sample.detach().double().sum().cpu()
    total = env.all_reduce_sum(total)
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(config, step)
    optimizer.step()
    return float(total / config.batch_size)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def _set_up(
    config: TrainConfig,
    paths: RunPaths,
    env: Distributed,
    fresh: bool,
    init: str | Path | None,
    add_levels: Sequence[tuple[int, int, int]],
) -> tuple[ClipSource, Denoiser, Codec, Codebook | None]:
    """The data source, the model to train, its codec and history codebook: a new one (saved in
    `paths.model` with the config), a finetuned one (`init`, its codebook kept), or the run's
    own (a resume). A new codebook is fitted here, before step 0."""
    if fresh:
        env.barrier()
        if env.is_main:
            paths.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(paths.config, config.to_dict())
    source = make_source(config, codec_from_config(dict(config.codec)))
    if not fresh:
        initial = load_bundle(paths.model)
        model = Denoiser(initial.transformer, initial.text_encoder, config.prediction)
        return source, model, initial.codec, initial.codebook
    codebook = None
    if init is not None:
        model, codec, codebook = load_init(Path(init), config, source, add_levels)
    else:
        codec = fit_codec(config, source)
        vocab = Vocabulary.build(source.captions(VOCAB_SCRIPTS))
        model = build_denoiser(config, codec, vocab)
    check_kernels(model, config)
    if config.discretize_history and codebook is None:
        codebook = history_codebook(config, source, codec)
    if env.is_main:
        meta = bundle_meta(config)
        save_bundle(paths.model, model.transformer, model.text_encoder, codec, meta, codebook=codebook)
    env.barrier()
    return source, model, codec, codebook


# A step's micro-batches -> those trained on (framepack.distill's teacher targets), given the
# session (its current model) and the 0-based step.
Labeller = Callable[["Session", list[MicroBatch], int], list[MicroBatch]]


@dataclass
class Session:
    """What one training process works with: the data, the model (bare and wrapped for DDP or
    FSDP), its EMA and optimizer, and where it stands (step, training seconds before this
    process, counters saved with checkpoints)."""

    config: TrainConfig
    paths: RunPaths
    env: Distributed
    source: ClipSource
    codec: Codec
    model: Denoiser
    wrapped: nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    fresh: bool
    codebook: Codebook | None = None
    step: int = 0
    elapsed: float | None = 0.0
    counters: dict[str, Any] = field(default_factory=lambda: {"skipped_files": {}})


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    init: str | Path | None = None,
    add_levels: Sequence[tuple[int, int, int]] = (),
    progress: bool = True,
    stop: Any = None,
    label: Labeller | None = None,
) -> Path:
    """Train (or resume, or finetune) and return the run directory. See the module docstring.

    stop: a `framepack.resume.StopFlag` (Ctrl-C, SIGTERM); once set, a one-process run ends
    after the current step with a checkpoint of it (`--resume` continues exactly) and without
    its bundle. Only a one-process run watches it (several processes would stop at different
    steps); under torchrun Ctrl-C ends the processes and `--resume` starts at the last checkpoint.
    label: turns each step's drawn micro-batches into the ones trained on, after the previous
    step's update (distillation: teacher targets and self-rollout history, framepack.distill);
    None trains on the data's own flow-matching targets.
    """
    run = start(config, RunPaths(Path(run_dir)), resume=resume, init=init, add_levels=add_levels)
    config = run.config  # a finetune takes its model's history codebook size
    restore(run)
    ledger = Ledger(run, progress)
    # The next step's samples are drawn in a background thread while this step trains (they
    # depend only on (seed, step), so prefetching changes nothing but the speed).
    prefetch = ThreadPoolExecutor(max_workers=1)
    upcoming = prefetch.submit(draw_step, config, run.env, run.source, run.codec, run.step, run.codebook)
    try:
        while True:
            done = run.step >= config.steps
            stopped = bool(stop) and not done and run.env.world == 1
            ledger.status(done)
            due = run.step % config.checkpoint_every == 0 or done or stopped
            if run.step > ledger.start_step and due:
                snapshot(run, ledger.seconds())
            if done or stopped:
                break
            batches = upcoming.result()
            upcoming = prefetch.submit(
                draw_step, config, run.env, run.source, run.codec, run.step + 1, run.codebook
            )
            if label is not None:
                batches = label(run, batches, run.step)
            loss = train_step(config, run.env, run.wrapped, run.model, run.optimizer, batches, run.step)
            if not math.isfinite(loss):
                raise RuntimeError(f"loss became {loss} at step {run.step}; lower lr or check the data")
            beta = ema_beta(
                run.step * config.batch_size,
                config.batch_size,
                config.ema_halflife_samples,
                config.ema_rampup,
            )
            run.ema.update(run.model, beta)
            run.step += 1
            ledger.record(loss)
    finally:
        prefetch.shutdown(wait=True, cancel_futures=True)
        ledger.close()
    if run.env.is_main and not stopped:
        export_bundle(run.paths.root, run.paths.bundle, config_type=type(config))
    run.env.barrier()
    return run.paths.root


def start(
    config: TrainConfig,
    paths: RunPaths,
    *,
    resume: bool,
    init: str | Path | None,
    add_levels: Sequence[tuple[int, int, int]],
) -> Session:
    """Set up a run: check the config against the process count, build or load the model (a
    failed start leaves no run directory behind), wrap it, and clear a killed run's litter."""
    env = Distributed.from_env()
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.batch_size // config.micro_batch % env.world:
        raise UserError(
            f"batch_size/micro_batch = {config.batch_size // config.micro_batch} micro-batches cannot be "
            f"split over {env.world} processes; make it a multiple of the process count"
        )
    # A run killed before its initial model was saved starts over from its own config.json.
    fresh = not (resume and paths.config.is_file() and (paths.model / "framepack.json").is_file())
    if resume and fresh and (paths.log.is_file() or latest_checkpoint(paths.checkpoints) is not None):
        raise UserError(
            f"cannot resume {paths.root}: its model folder {paths.model} is missing but the run has "
            "checkpoints and a log; restore the folder, or start a new run with another --out"
        )
    if fresh and paths.root.exists() and any(paths.root.iterdir()) and not resume:
        raise UserError(
            f"run directory {paths.root} is not empty; pass --resume to continue it or pick a new --out"
        )
    created = not paths.root.exists()
    if fresh:
        config = inherit_discretization(config, init, say=env.is_main)
    try:
        source, model, codec, codebook = _set_up(config, paths, env, fresh, init, add_levels)
    except UserError:  # a failed start leaves nothing behind
        if created and env.is_main:
            shutil.rmtree(paths.root, ignore_errors=True)
        raise
    model.train().to(env.device)
    wrapped = wrap(model, env, config.strategy)  # FSDP shards `model`'s parameters in place
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=config.weight_decay
    )
    if env.is_main:  # a killed process's temporary files: checkpoints, JSON and bundles half written
        for tmp in [
            *paths.checkpoints.glob("*.tmp"),
            *paths.root.glob(".*.tmp"),
            *paths.root.glob(".*.tmp.*"),
            *paths.root.glob(".*.old"),
        ]:
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    return Session(config, paths, env, source, codec, model, wrapped, EMA(model), optimizer, fresh, codebook)


def restore(run: Session) -> None:
    """Load the latest checkpoint of a resumed run (model, EMA, optimizer, RNG, counters) after
    checking that it was made with the same settings; then record a resume's new `--steps`."""
    paths, env = run.paths, run.env
    latest = latest_checkpoint(paths.checkpoints) if not run.fresh else None
    if latest is not None:
        ckpt = load_checkpoint(latest, restore_global_rng=True)
        check_settings(ckpt.state.get("settings"), run.config.resume_settings(), latest)
        set_state_dict(
            run.model,
            run.optimizer,
            model_state_dict=ckpt.model,
            optim_state_dict=ckpt.optimizer,
            options=StateDictOptions(full_state_dict=True),
        )
        run.ema.load_state_dict(ckpt.ema)
        run.step, run.counters = ckpt.step, ckpt.state.get("counters", run.counters)
        run.elapsed = ckpt.state.get("seconds")
    if env.is_main:
        truncate_log(paths.log, run.step)
    changed = json.loads(json.dumps(run.config.to_dict())) != json.loads(paths.config.read_text())
    if env.is_main and not run.fresh and changed:  # the start succeeded: a resume's new --steps
        atomic_write_json(paths.config, run.config.to_dict())
    env.barrier()


def snapshot(run: Session, seconds: float) -> None:
    """Save a checkpoint (model, EMA, optimizer, RNG, counters) and prune old ones."""
    config, env = run.config, run.env
    run.counters["skipped_files"] = getattr(run.source, "skipped", {})
    if config.strategy == "ddp":
        run.counters["replicas_identical"] = env.replicas_identical(run.model)
    model_state, optim_state = full_state(run.model, run.optimizer)
    ema_state = full_tensors(run.ema.state_dict())
    if env.is_main:
        state = {"samples": run.step * config.batch_size, "counters": run.counters, "seconds": seconds,
                 "settings": config.resume_settings()}  # fmt: skip
        save_checkpoint(
            run.paths.checkpoints,
            Checkpoint(run.step, full_tensors(model_state), ema_state, optim_state, state),
        )
        prune_checkpoints(run.paths.checkpoints, config.keep_checkpoints)
    env.barrier()


class Ledger:
    """The run's bookkeeping on the main process: the log (one JSON line per step), the progress
    bar with loss and samples/s, the loss plot, and training seconds summed over sessions."""

    def __init__(self, run: Session, progress: bool) -> None:
        self.run = run
        main = run.env.is_main
        self.history = read_log(run.paths.log) if main else []
        if run.elapsed is None:  # checkpoints before "seconds" was saved: the log's time at that step
            last = self.history[-1] if self.history else None
            run.elapsed = last["seconds"] if last and last["step"] == run.step else 0.0
        self.bar = tqdm(total=run.config.steps, initial=run.step, unit="step",
                        disable=not (progress and main), dynamic_ncols=True)  # fmt: skip
        self.start_time, self.start_step = time.perf_counter(), run.step
        self.file = run.paths.log.open("a") if main else None

    def seconds(self) -> float:
        """Training seconds, summed over this and earlier (resumed) sessions."""
        return round(self.run.elapsed + time.perf_counter() - self.start_time, 3)

    def status(self, done: bool) -> None:
        run, config = self.run, self.run.config
        if not (run.env.is_main and self.history and (run.step % config.log_every == 0 or done)):
            return
        recent = [r["loss"] for r in self.history[-config.log_every :]]
        rate = (
            (run.step - self.start_step)
            * config.batch_size
            / max(time.perf_counter() - self.start_time, 1e-9)
        )
        self.bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", samples_per_s=f"{rate:.1f}")
        plot_loss([r["step"] for r in self.history], [r["loss"] for r in self.history], self.run.paths.plot)
        if self.file is not None:
            self.file.flush()

    def record(self, loss: float) -> None:
        """Log the step just taken (its loss, learning rate, samples and seconds)."""
        run = self.run
        if self.file is not None:
            row = {"step": run.step, "loss": loss, "lr": learning_rate(run.config, run.step - 1),
                   "samples": run.step * run.config.batch_size, "seconds": self.seconds()}  # fmt: skip
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
            self.history.append(row)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()


def export_bundle(
    run_dir: str | Path,
    out: str | Path,
    card: dict[str, Any] | None = None,
    readme: str | None = None,
    dtype: torch.dtype = torch.float32,
    config_type: type[TrainConfig] = TrainConfig,
) -> Path:
    """Write the latest checkpoint's EMA weights as a model bundle at `out` (the transformer in
    `dtype`; the prompt encoder stays float32). `config_type` reads the run's config.json (a
    distillation run's: framepack.distill.config.DistillConfig)."""
    paths = RunPaths(Path(run_dir))
    latest = latest_checkpoint(paths.checkpoints)
    if latest is None:
        raise UserError(f"{paths.root} has no checkpoint to export; train first")
    config = load_config(paths.config, config_type)
    initial = load_bundle(paths.model)
    model = Denoiser(initial.transformer, initial.text_encoder, config.prediction)
    ckpt = load_checkpoint(latest)
    model.load_state_dict(ckpt.ema)
    meta = bundle_meta(config, ckpt.step, card)
    transformer = model.transformer.to(dtype)
    return save_bundle(out, transformer, model.text_encoder, initial.codec, meta, readme, initial.codebook)
