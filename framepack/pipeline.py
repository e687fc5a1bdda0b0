"""The one generation orchestration: plan -> pack -> sample -> update history -> decode -> write.

`FramePackPipeline.from_pretrained(model)` loads a model (the bundled demo, the released
HunyuanVideo checkpoints, or a model folder); `pipe.generate(options)` runs a job. The CLI
(`framepack generate`), the queue and the web UI all call `generate`; nothing else re-implements
it. The pieces live in their own modules: the section plan (framepack.plans), a section's packed
context (framepack.context), sampling (framepack.sampling), the per-section files that make a job
resumable (framepack.resume) and decoding + writing (framepack.writer).

A job is never lost: after every section its latents are saved (one small file per section next
to the video) with the plan position, and the MP4 is rewritten atomically. A job stopped by
Ctrl-C or SIGTERM (after the current step), or killed, is finished by running the same command
with `--resume`, and the result equals an uninterrupted run: the noise of each section derives
from (seed, section), never from a shared stream.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from framepack import __version__
from framepack.components import BUILTIN_MODELS, Components, LoadOptions, load_components
from framepack.conditioning import extension_prompt, latent_time, prepare
from framepack.context import STRATEGY_LAYOUT, plan_context, released_context
from framepack.disk import atomic_path, check_names, writing
from framepack.errors import UserError
from framepack.options import GenerationOptions
from framepack.packing import PackedContext, Schedule, parse_schedule
from framepack.plans import Anchor, Plan, Section, plan_for_length
from framepack.preview import decode_preview
from framepack.progress import Progress
from framepack.resume import SectionFiles, StopFlag, load_state, parts_path, resume_path, section_generator
from framepack.resume_options import given_fields, resumed_options
from framepack.runtime import ensure_threads
from framepack.sampling import Velocity, cfg_velocity, get_sigmas, sample_euler, sample_unipc, x0_to_velocity
from framepack.video import VIDEO_SUFFIXES, check_output_path, remove_litter, sidecar_path
from framepack.writer import VideoFile, VideoWriter

logger = logging.getLogger(__name__)

OUTPUT_TYPES = ("mp4", "pt", "np", "pil")


@dataclass(frozen=True)
class StepInfo:
    """What the step callback receives after every sampler step.

    section: the section being sampled (framepack.plans.Section); sections: how many the plan
    has; step: 0-based step of `steps`; sigma: the noise level the step started from;
    x0: the current clean estimate of the section's latents (1, C, n, h, w).
    """

    section: Section
    sections: int
    step: int
    steps: int
    sigma: float
    x0: Tensor


StepCallback = Callable[[StepInfo], None]


@dataclass
class GenerationResult:
    """What a job produced.

    path: the video written (None with an `output_type` other than "mp4"); frames, seconds: its
    length; stopped: True when stopped before the end (resume with `resume=True`); latents:
    (1, C, T, h, w), the whole timeline (zeros where not generated when stopped); plan: the
    section plan; video: the frames when asked for by `output_type` ("pt": float tensor
    (F, 3, H, W) in [0, 1]; "np": float32 array (F, H, W, 3) in [0, 1]; "pil": list of images),
    else None.
    """

    path: Path | None
    frames: int
    seconds: float
    stopped: bool
    latents: Tensor
    plan: Plan
    video: Any = None


class SectionStopped(Exception):
    """Raised from the step callback to leave a section when a stop was asked for."""


class FramePackPipeline:
    """Long-video generation with a packed next-section model."""

    def __init__(self, components: Components) -> None:
        self.components = components

    @classmethod
    def from_pretrained(
        cls, model: str | Path = "demo", options: LoadOptions | None = None, *, threads: int | None = None
    ) -> FramePackPipeline:
        """Load `"demo"` (bundled), `"hunyuan-inverted"`, `"hunyuan-f1"` or a model folder.

        threads: torch's CPU threads for this process; None: the CLI's default (framepack.runtime:
        `OMP_NUM_THREADS`, else half the cores, 1 to 8), unless an entry point already chose.
        """
        ensure_threads(threads)
        return cls(load_components(str(model), options))

    def options_to_resume(self, options: GenerationOptions, given: Collection[str]) -> GenerationOptions:
        """The options of the stopped job writing `options.out`, from its resume state (as
        `resumed_options`: a `given` field that contradicts the state raises UserError). Without
        a resume state the options stay as they are (the job starts, or `--resume` is refused)."""
        path = resume_path(options.out)
        if not path.is_file():
            return options
        settings = load_state(path).settings
        model = settings.get("model")
        if model != self.components.spec.name:
            how = f"--model {model}" if model in BUILTIN_MODELS else "--model demo or the model's folder"
            raise UserError(
                f"{options.out} was made with model {model}, not {self.components.spec.name}; "
                f"resume it with that model ({how})"
            )
        return resumed_options(options, settings, given, options.out)

    def __call__(self, options: GenerationOptions | None = None, **kwargs: Any) -> GenerationResult:
        return self.generate(options, **kwargs)

    def generate(
        self,
        options: GenerationOptions | None = None,
        *,
        generator: torch.Generator | None = None,
        output_type: str = "mp4",
        progress: bool = True,
        callback: StepCallback | None = None,
        stop: StopFlag | None = None,
        **overrides: Any,
    ) -> GenerationResult:
        """Run one job. `overrides` set fields of `GenerationOptions` (e.g. `prompt="..."`).

        generator: instead of `seed`, draw the job seed from this generator (the seed drawn is
        recorded in the settings, so the job can be resumed and repeated). output_type: "mp4"
        writes the video file (resumable); "pt", "np" or "pil" return its frames in
        `result.video` and write no file. callback: called with a `StepInfo` after every step.
        """
        options = dataclasses.replace(options or GenerationOptions(), **overrides)
        if generator is not None:
            options = dataclasses.replace(options, seed=draw_seed(generator))
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if output_type != "mp4" and (options.resume or options.out):
            raise UserError(f"output_type {output_type!r} writes no file; drop out= and resume=")
        if options.resume and options.out:  # the job's settings come from its resume state
            options = self.options_to_resume(options, given_fields(options, overrides))
        options.validate()
        job = Job(self.components, options, write_files=output_type == "mp4")
        if stop is not None:
            result = job.run(stop, progress=progress, callback=callback)
        else:
            with StopFlag() as flag:
                result = job.run(flag, progress=progress, callback=callback)
        if output_type != "mp4":
            result.video = convert_frames(job.pixels, output_type)
        return result


def draw_seed(generator: torch.Generator) -> int:
    """A job seed (63-bit) drawn from `generator`."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


def convert_frames(pixels: Tensor, output_type: str) -> Any:
    """Pixels (1, 3, F, H, W) in about [-1, 1] -> the frames of `output_type` (see GenerationResult)."""
    frames = ((pixels[0].clamp(-1, 1) + 1) / 2).permute(1, 0, 2, 3)  # (F, 3, H, W) in [0, 1]
    if output_type == "pt":
        return frames
    array = frames.permute(0, 2, 3, 1).numpy().astype("float32")  # (F, H, W, 3)
    if output_type == "np":
        return array
    from PIL import Image

    return [Image.fromarray((frame * 255).round().astype("uint8")) for frame in array]


def check_job_files(out: Path, overwrite: bool) -> None:
    """Before any work: the sidecar and resume data the job writes beside `out` must not hold
    another job's results (UserError), unless `overwrite`."""
    parts = parts_path(out)
    for path, what in (
        (sidecar_path(out), "settings sidecar"),
        (resume_path(out), "resume data"),
        (parts, "resume data"),
    ):
        if path.is_dir() and path != parts:
            raise UserError(f"{path} (where the job writes its {what}) is a directory; choose another --out")
        if path.exists() and not overwrite:
            hint = (
                "finish that job with --resume, or pass --overwrite"
                if "resume" in what
                else "pass --overwrite"
            )
            raise UserError(f"{path} already exists ({what} of another job); {hint} or choose another --out")


def check_job_names(out: Path) -> None:
    """Before any work: every file the job writes beside `out` (sidecar, resume data and its
    parts) must have a name the file system can hold (UserError naming the longest)."""
    parts = parts_path(out)
    check_names(
        [out, sidecar_path(out), resume_path(out), parts, parts / "section_00000.safetensors"], "--out"
    )


def check_resumable(out: Path) -> None:
    """`--resume` needs the job's resume data (a job saves it when it starts): a finished video
    is said to be finished, and nothing at all is refused (as `framepack train --resume`)."""
    if resume_path(out).exists() or parts_path(out).exists():
        return
    if out.is_file() and _complete(out):
        raise UserError(
            f"{out} is already finished (its sidecar says complete and no resume data is left); "
            "nothing to resume: run without --resume (and with --overwrite to make it again)"
        )
    raise UserError(
        f"nothing to resume for {out}: no resume data ({resume_path(out).name}); "
        "start the job without --resume"
    )


def _complete(video: Path) -> bool:
    try:
        return bool(json.loads(sidecar_path(video).read_text(encoding="utf-8")).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False


def default_output_path() -> Path:
    return Path("outputs") / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}.mp4"


class Job:
    """One generation job: its conditioning, plan, latent timeline and files."""

    def __init__(
        self, components: Components, options: GenerationOptions, *, write_files: bool = True
    ) -> None:
        self.components = components
        self.spec = components.spec
        if components.history_codebook is not None and self.spec.mode == "released":
            raise UserError(
                "history discretization applies to general-mode models; the released (hunyuan) "
                "layouts were not trained with it: load the model without its history codebook"
            )
        if options.cfg is None:  # the model's default guidance on the prompt
            options = dataclasses.replace(options, cfg=self.spec.cfg)
        self.options = options
        self.fps = options.fps or self.spec.fps
        self.out = self._output_path() if write_files else None
        if options.extend and options.prompt is None and options.prompts is None:
            # continue with the prompt the video ends with (its sidecar), else the model's
            options = dataclasses.replace(options, prompt=extension_prompt(options.extend))
            self.options = options
        self.prompt_times = self._prompt_times()  # before the prompts are encoded
        self.cond = prepare(components, options)
        self.prefix_frames = (
            0 if self.cond.source is None else self.cond.source.shape[2] - self.cond.existing_frames
        )
        self.schedule = self._schedule()
        self.plan, self.frames = self._plan()
        self.settings = self._settings()
        self.files = SectionFiles(self.out) if self.out is not None else None
        self.pixels: Tensor | None = None  # the decoded video, kept by jobs that write no file
        if self.files is not None:  # a kill's leftovers
            for path in (self.out, sidecar_path(self.out), resume_path(self.out)):
                remove_litter(path)
            self.files.remove_litter()

    # ------------------------------------------------------------------ set-up

    def _output_path(self) -> Path:
        """The video to write, checked before any work (UserError)."""
        o = self.options
        out = Path(o.out) if o.out else default_output_path()
        if o.resume:
            if o.out is None:
                raise UserError("--resume needs --out: the video whose job should be finished")
            check_job_names(out)
            check_resumable(out)
            return out
        if o.out is None:
            with writing(out.parent):
                out.parent.mkdir(parents=True, exist_ok=True)
        check_output_path(out, o.overwrite, VIDEO_SUFFIXES)
        check_job_names(out)
        check_job_files(out, o.overwrite)
        return out

    def _schedule(self) -> Schedule | None:
        """The model's context schedule, with `--ranking` if asked (general mode only)."""
        o = self.options
        if self.spec.mode == "released":
            if self._research():
                raise UserError(
                    "--history-noise, --history-cfg and --ranking apply to general-mode models "
                    "(the demo, trained bundles); the released layouts are fixed: drop them"
                )
            return None
        schedule = parse_schedule(self.spec.schedule)
        if o.ranking is not None:
            schedule = dataclasses.replace(schedule, ranking=o.ranking)
        return schedule

    def _plan(self) -> tuple[Plan, int]:
        """The section plan and the exact number of output frames."""
        codec, cond, spec = self.components.codec, self.cond, self.spec
        strategy = self.options.plan or spec.plan
        if cond.existing is not None and strategy not in ("forward", "endpoints"):
            raise UserError(f"--extend continues a video forward; use --plan forward (not {strategy})")
        if round(self.options.seconds * self.fps) < 1:
            raise UserError(
                f"--seconds {self.options.seconds:g} is shorter than one frame at {self.fps:g} fps; "
                f"ask for at least {1 / self.fps:.3g} s"
            )
        needs = STRATEGY_LAYOUT.get(strategy)
        if spec.layouts and needs not in spec.layouts:
            logger.warning(
                "model %s was trained for %s sections only; --plan %s asks for %s sections and "
                "will give a poor video (use --plan %s)",
                spec.name, "/".join(spec.layouts), strategy, needs, spec.plan,
            )  # fmt: skip
        frames = round(self.options.seconds * self.fps) + cond.existing_frames  # on the timeline
        try:
            plan = plan_for_length(
                strategy,
                max(codec.num_latents(max(frames, 1)), 2),
                window=spec.window,
                mode=spec.mode,
                start_image=cond.start is not None,
                end_image=cond.end is not None,
                existing=0 if cond.existing is None else cond.existing.shape[2],
                anchors=self._anchors(),
            )
        except ValueError as err:
            raise UserError(f"--plan {strategy} with model {spec.name}: {err}") from None
        produced = codec.num_frames(plan.total)
        if spec.mode == "released" and cond.end is not None:
            return plan, produced + self.prefix_frames  # the end image is the last frame: keep sections whole
        return plan, min(frames, produced) + self.prefix_frames

    def _prompt_times(self) -> dict[int, int]:
        """Latent frame -> timeline entry of every prompt change (UserError when two share one)."""
        prompts: dict[int, int] = {}
        entries = self.options.timeline().entries
        for i, (t, _) in enumerate(entries):
            if i == 0:  # the first prompt starts the video: no anchor
                continue
            at = latent_time(self.components, t, self.fps)
            if at in prompts:
                first, tf = entries[prompts[at]][0], self.components.codec.time_factor
                raise UserError(
                    f"--prompts: entries at {first:g}s and {t:g}s fall on the same latent frame "
                    f"({tf} frames = {tf / self.fps:.3g} s); "
                    "space them further apart"
                )
            prompts[at] = i
        return prompts

    def _anchors(self) -> list[Anchor]:
        """Prompt changes and keyframe images as plan anchors, at latent times."""
        prompts = self.prompt_times
        prefix = 1 if self.cond.existing is None else self.cond.existing.shape[2]
        times = sorted(set(prompts) | set(self.cond.keyframes))
        anchors = []
        for t in times:
            if t < prefix:
                raise UserError(f"a keyframe or prompt at latent frame {t} falls on the start of the video")
            anchors.append(Anchor(time=t, prompt=prompts.get(t), image=t in self.cond.keyframes))
        return anchors

    def _settings(self) -> dict[str, Any]:
        o = self.options
        return {
            "framepack_version": __version__,
            "model": self.spec.name,
            "plan": self.plan.strategy,
            "mode": self.plan.mode,
            "window": self.spec.window,
            "prompts": self.cond.timeline.format(),
            "negative_prompt": o.negative_prompt,
            "image": o.image or (self.spec.example_image if not (o.no_image or o.extend) else None),
            "end_image": o.end_image,
            "keyframes": [[t, p] for t, p in o.keyframes],
            "extend": o.extend,
            "seconds": o.seconds,
            "fps": self.fps,
            "frames": self.frames,
            "seed": o.seed,
            "steps": o.steps or self.spec.steps,
            "sampler": o.sampler or self.spec.sampler,
            "shift": o.shift if o.shift is not None else self.spec.shift,
            "guidance": o.guidance if o.guidance is not None else self.spec.guidance,
            "cfg": o.cfg,
            "cfg_rescale": o.cfg_rescale,
            "size": list(self.cond.size),
            **self._research(),
            **self._boundaries(),
        }

    def _research(self) -> dict[str, Any]:
        """The drift-research options, recorded only when used (older videos resume the same)."""
        o, out = self.options, {}
        if o.history_noise > 0:
            out["history_noise"] = o.history_noise
        if o.history_cfg != 1:
            out["history_cfg"] = o.history_cfg
        if o.ranking is not None:
            out["ranking"] = o.ranking
        return out

    def _boundaries(self) -> dict[str, Any]:
        """First frames of every section and every latent after the first (`framepack eval
        drift` measures the seams there), in frames of the output video."""
        codec, frames = self.components.codec, self.frames
        shift = self.prefix_frames  # an extended video's frames before its latents' first

        def frame(latent: int) -> int:
            return codec.num_frames(latent) + shift

        first = sorted({frame(s.start) for s in self.plan.sections if s.start > 0})
        return {
            "section_frames": codec.time_factor * self.spec.window,
            "latent_frames": codec.time_factor,
            "section_boundaries": [f for f in first if 0 < f < frames],
            "latent_boundaries": [f for f in map(frame, range(1, self.plan.total)) if 0 < f < frames],
        }

    # ------------------------------------------------------------------ the loop

    def run(self, stop: StopFlag, *, progress: bool, callback: StepCallback | None) -> GenerationResult:
        """Sample the plan's sections in order, keeping each as it lands (Sec. 3's loop)."""
        latents, done = self._timeline()
        writer = self._writer()
        if self.files is not None and not self.options.resume:
            self.files.start(self.settings, self.options.seed, replacing=not writer.file.progressive)
        start = self._resume(latents, done, writer) if self.options.resume else 0
        steps = self.settings["steps"]
        if self.components.on_job_start is not None:
            self.components.on_job_start(tuple(latents.shape[3:]), steps)
        bar = Progress(len(self.plan), steps, enabled=progress, initial=start)
        stopped = False
        for section in self.plan.sections[start:]:
            bar.start_section(self._section_label(section))
            if self.components.on_section_start is not None:
                self.components.on_section_start()

            def on_step(info: StepInfo) -> None:
                self._on_step(info, bar, callback, stop)

            x = self.sample_section(section, latents, on_step)
            if x is None:  # stopped mid-section
                stopped = True
                break
            self._keep(section, x, latents, done, writer)
            bar.end_section()
            if stop:
                stopped = section is not self.plan.sections[-1]
                break
        bar.close()
        self._finish(latents, done, writer, stopped, resumed_done=start == len(self.plan.sections))
        return GenerationResult(
            self.out, writer.frames, writer.frames / self.fps, stopped, latents, self.plan
        )

    def sample_section(
        self, section: Section, latents: Tensor, on_step: StepCallback | None = None
    ) -> Tensor | None:
        """Sample one section's latents (1, C, n, h, w) from its (seed, section) noise, given the
        timeline `latents` (1, C, T, h, w); None if `on_step` stopped it (SectionStopped)."""
        c = self.components
        dropped = self.context(section, latents, drop_history=True) if self.options.history_cfg != 1 else None
        velocity = self._velocity(section, self.context(section, latents), dropped)
        sigmas = self._sigmas(latents.shape[3:])
        noise_shape = (1, latents.shape[1], section.stop - section.start, *latents.shape[3:])
        noise = torch.randn(noise_shape, generator=section_generator(self.options.seed, section.start))

        def report(step: int, x: Tensor, x0: Tensor) -> None:
            if on_step is not None:
                info = StepInfo(section, len(self.plan), step, len(sigmas) - 1, float(sigmas[step]), x0)
                on_step(info)

        sampler = sample_unipc if self.settings["sampler"] == "unipc" else sample_euler
        try:
            x = sampler(velocity, noise.to(c.device), sigmas.to(c.device), callback=report)
        except SectionStopped:
            return None
        return x.float().cpu()

    def _on_step(self, info: StepInfo, bar: Progress, callback: StepCallback | None, stop: StopFlag) -> None:
        """After each step: progress, the user's callback, previews, and stop requests."""
        bar.step()
        if callback is not None:
            callback(info)
        if self.options.preview:
            write_preview(self, info.section, info.step, info.x0)
        if stop and info.step < info.steps - 1:
            raise SectionStopped

    def _velocity(
        self, section: Section, context: PackedContext, dropped: PackedContext | None = None
    ) -> Callable[[Tensor, float], Tensor]:
        """The section's guided velocity v(x (1, C, n, h, w), sigma), its conditioning closed over.

        Guidance on the prompt (`cfg`, against the negative prompt) and, with `dropped` (the
        context without its history), on the history (`history_cfg`):
        v = v_cfg + (history_cfg - 1) * (v(prompt, history) - v(prompt, no history)).
        """
        c, spec, o = self.components, self.spec, self.options
        target = torch.tensor([section.latent_indices], dtype=torch.int64, device=c.device)
        image = self.cond.image_embeds
        if section.image_anchor is not None and section.image_anchor < len(self.plan.anchors):
            image = self.cond.keyframe_embeds.get(self.plan.anchors[section.image_anchor].time, image)
        image = None if image is None else image.to(c.device, c.dtype)
        value = self.settings["guidance"]
        guidance = None if value is None else torch.full((1,), value * 1000.0, device=c.device)

        def velocity_for(embeds: Any, ctx: PackedContext = context) -> Callable[[Tensor, float], Tensor]:
            def velocity(x: Tensor, sigma: float) -> Tensor:
                t = torch.full((1,), sigma * 1000.0, device=c.device, dtype=c.dtype)
                with torch.no_grad():
                    out = c.transformer(
                        x.to(c.dtype), t, embeds.states, embeds.mask, embeds.pooled, target,
                        context=ctx, image_embeds=image, guidance=guidance,
                    ).float()  # fmt: skip
                return x0_to_velocity(x, out, sigma) if spec.prediction == "x0" else out

            return velocity

        prompt = self.cond.prompts[section.prompt].to(c.device, c.dtype)
        negative = prompt if self.cond.negative is None else self.cond.negative.to(c.device, c.dtype)
        if dropped is None:
            return cfg_velocity(velocity_for(prompt), velocity_for(negative), o.cfg, o.cfg_rescale)
        conditional = reuse_last_call(velocity_for(prompt))  # both guidances share its pass
        guided = cfg_velocity(conditional, velocity_for(negative), o.cfg, o.cfg_rescale)
        return history_guided(guided, conditional, velocity_for(prompt, dropped), o.history_cfg)

    def _sigmas(self, latent_hw: tuple[int, int]) -> Tensor:
        """The noise levels, 1 -> 0 (`steps` + 1 values): the fixed shift, or one from the size."""
        steps, shift = self.settings["steps"], self.settings["shift"]
        if shift:
            return get_sigmas(steps, shift=shift)
        h, w = latent_hw
        return get_sigmas(steps, seq_len=self.spec.window * h * w // 4)

    def context(self, section: Section, latents: Tensor, *, drop_history: bool = False) -> PackedContext:
        """The section's packed clean context from the latent timeline (framepack.context);
        `drop_history`: anchors only, the history zero padding (history guidance's other branch,
        as `history_dropout` trains it). `--history-noise` noise is seeded per section."""
        device, dtype = self.components.device, self.components.dtype
        if section.levels:  # released layouts, index for index
            return released_context(latents, section.levels).to(device, dtype)
        noise = self.options.history_noise
        generator = section_generator(self.options.seed, f"history-{section.start}") if noise else None
        ctx = plan_context(
            latents,
            section,
            self.schedule,
            STRATEGY_LAYOUT.get(self.plan.strategy, "endpoints"),
            anchor_gap=self.spec.max_anchor_gap,
            drop_history=drop_history,
            quantize=self.components.history_codebook,  # as in training (SPEC sec. 4)
            history_noise=noise,
            generator=generator,
        )
        return ctx.to(device, dtype)

    def _section_label(self, section: Section) -> str:
        """Which section, in the output video's seconds, e.g. "section 2 of 8 (0.27-0.53 s)"."""
        codec = self.components.codec
        first = codec.num_frames(section.start) if section.start else 0
        last = min(codec.num_frames(section.stop), self.frames) - 1
        count = len(self.plan.sections)
        return f"section {section.step + 1} of {count} ({first / self.fps:.2f}-{last / self.fps:.2f} s)"

    # ------------------------------------------------------------------ the timeline and files

    def _timeline(self) -> tuple[Tensor, Tensor]:
        """The latent timeline (1, C, T, h, w) on the CPU with the known frames filled in, and
        which frames are known (T,) bool."""
        cond, codec = self.cond, self.components.codec
        h, w = (s // codec.space_factor for s in cond.size)
        latents = torch.zeros((1, codec.latent_channels, self.plan.total, h, w))
        done = torch.zeros(self.plan.total, dtype=torch.bool)
        if cond.existing is not None:
            latents[:, :, : cond.existing.shape[2]] = cond.existing
        elif cond.start is not None:
            latents[:, :, :1] = cond.start
        for t, lat in cond.keyframes.items():
            latents[:, :, t : t + 1] = lat
        if cond.end is not None:
            latents[:, :, -1:] = cond.end
        done[list(self.plan.known)] = True
        return latents, done

    def _writer(self) -> VideoWriter:
        c = self.components
        # --overwrite keeps the old video until the new one is complete (no in-progress copies),
        # also when the job is resumed (its resume state records that it replaces a video)
        if self.options.resume and self.files is not None:
            progressive = not self.files.was_replacing()
        else:
            progressive = not (self.out and self.out.exists())
        file = (
            VideoFile(self.out, self.fps, self.options.crf, self.settings, self.frames, progressive)
            if self.out
            else None
        )
        source = None if self.cond.source is None else (self.cond.source, self.cond.existing.shape[2])
        return VideoWriter(c.codec, c.device, self.spec.window, file, source)

    def _keep(self, section: Section, x: Tensor, latents: Tensor, done: Tensor, writer: VideoWriter) -> None:
        """Put a sampled section on the timeline, save it (resumable) and update the video."""
        latents[:, :, section.start : section.stop] = x
        done[section.start : section.stop] = True
        if self.files is not None:
            self.files.save(section.step, x, self.settings, self.options.seed)
        writer.add(latents, done, section.start, section.stop)
        if self.files is not None:
            writer.write(latents, done, final=section is self.plan.sections[-1])

    def _finish(
        self, latents: Tensor, done: Tensor, writer: VideoWriter, stopped: bool, *, resumed_done: bool
    ) -> None:
        """Write the whole video (stopped: what was made; `resumed_done`: every section was saved
        before this run, killed in the finishing window) and drop the resume data once complete.
        A job without files keeps its pixels instead."""
        if self.files is None:
            pixels = writer.decode(latents, done)
            self.pixels = pixels[:, :, : self.frames] if bool(done.all()) else pixels
            writer.frames = int(self.pixels.shape[2])
            return
        if stopped or resumed_done:
            writer.write(latents, done, final=True)
        if not stopped:
            self.files.cleanup()

    def _resume(self, latents: Tensor, done: Tensor, writer: VideoWriter) -> int:
        """Load the saved sections into the timeline; returns the next section to run.

        The writer sees the sections in their original order, so a cross-faded video (VAE
        codecs) is decoded exactly as in an uninterrupted run.
        """
        next_section = self.files.next_section(self.settings)
        for section in self.plan.sections[:next_section]:
            shape = tuple(latents[:, :, section.start : section.stop].shape)
            latents[:, :, section.start : section.stop] = self.files.load(section.step, shape)
            done[section.start : section.stop] = True
            writer.add(latents, done, section.start, section.stop)
        return next_section


def reuse_last_call(velocity: Velocity) -> Velocity:
    """`velocity` that returns its last result again when called with the same x and sigma (one
    transformer pass for a term two guidances both need)."""
    last: list = [None, None, None]  # x, sigma, output

    def cached(x: Tensor, sigma: float) -> Tensor:
        if last[0] is not x or last[1] != sigma:
            last[:] = [x, sigma, velocity(x, sigma)]
        return last[2]

    return cached


def history_guided(
    guided: Velocity, with_history: Velocity, without_history: Velocity, scale: float
) -> Velocity:
    """Guidance on the history (classifier-free guidance against dropped history, the paper's
    "history guidance" baseline): `guided + (scale - 1) * (with_history - without_history)`."""

    def velocity(x: Tensor, sigma: float) -> Tensor:
        return guided(x, sigma) + (scale - 1.0) * (with_history(x, sigma) - without_history(x, sigma))

    return velocity


def write_preview(job: Job, section: Section, step: int, x0: Tensor) -> None:
    """A decoded preview of the current estimate (`decode_preview`: the section's frames side
    by side) as `section0003.png` in the job's --preview folder, replaced (atomically) at every
    step: one file per section, the newest estimate, however many steps a job takes."""
    from PIL import Image

    folder = Path(job.options.preview)
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    strip = decode_preview(job.components.codec, x0, device=job.components.device)
    with atomic_path(folder / f"section{section.step:04d}.png") as tmp:
        Image.fromarray(strip).save(tmp, format="PNG")


def load_settings(video: str | Path) -> dict[str, Any]:
    """The settings a FramePack video was made with (from its JSON sidecar)."""
    return json.loads(sidecar_path(video).read_text())
