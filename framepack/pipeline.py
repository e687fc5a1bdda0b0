"""The one generation orchestration: plan -> pack -> sample -> update history -> decode -> write.

`FramePackPipeline.from_pretrained(model)` loads a model (the bundled demo, the released
HunyuanVideo checkpoints, or a model folder); `pipe.generate(options)` runs a job. The CLI
(`framepack generate`) and the Python API both call `generate`; nothing else re-implements it.

A job is never lost: after every section the generated latents are saved (one small file per
section next to the video) with the plan position, and the MP4 is rewritten atomically. A job
stopped by Ctrl-C or SIGTERM (after the current step), or killed, is finished by running the
same command with `--resume`, and the result equals an uninterrupted run: the noise of each
section derives from (seed, section), never from a shared stream.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from framepack import __version__
from framepack.components import Components, LoadOptions, load_components
from framepack.conditioning import latent_time, prepare
from framepack.errors import UserError
from framepack.options import GenerationOptions
from framepack.packing import PackedContext, PackedLevel, pack, parse_schedule
from framepack.plans import Anchor, Plan, Section, make_plan
from framepack.progress import Progress
from framepack.resume import (
    ResumeState,
    StopFlag,
    load_part,
    load_state,
    parts_path,
    resume_path,
    save_part,
    save_state,
    section_generator,
)
from framepack.sampling import cfg_velocity, get_sigmas, sample_euler, sample_unipc, x0_to_velocity
from framepack.video import (
    VIDEO_SUFFIXES,
    check_output_path,
    remove_litter,
    sidecar_path,
    write_sidecar,
    write_video,
)

# Zero padding continues the history on the side where the plan's history lies (as in training,
# framepack/train/layouts.py): before the section going forward, after it going backward.
PAD_SIDE = {"forward": "before", "inverted": "after"}
# The training layout (framepack/train/layouts.py) whose contexts a plan's sections see.
PLAN_LAYOUT = {
    "forward": "forward",
    "inverted": "inverted",
    "endpoints": "endpoints",
    "multi-endpoint": "endpoints",
}
logger = logging.getLogger(__name__)

# An in-progress MP4 is rewritten after a section unless less than WRITE_THROTTLE times the
# last write's cost has passed since it: writing takes at most 1 / (1 + WRITE_THROTTLE) of the
# time however long the video grows (the resume data is saved after every section regardless).
WRITE_THROTTLE = 3.0

StepCallback = Callable[[Section, int, Tensor], None]  # (section, step, x0 estimate)


@dataclass
class GenerationResult:
    """What a job produced. `latents` (1, C, T, h, w) are the whole timeline (zeros where not
    generated when `stopped`)."""

    path: Path
    frames: int
    seconds: float
    stopped: bool
    latents: Tensor
    plan: Plan


class FramePackPipeline:
    """Long-video generation with a packed next-section model."""

    def __init__(self, components: Components) -> None:
        self.components = components

    @classmethod
    def from_pretrained(
        cls, model: str | Path = "demo", options: LoadOptions | None = None
    ) -> FramePackPipeline:
        """Load `"demo"` (bundled), `"hunyuan-inverted"`, `"hunyuan-f1"` or a model folder."""
        return cls(load_components(str(model), options))

    def __call__(self, options: GenerationOptions | None = None, **kwargs: Any) -> GenerationResult:
        return self.generate(options, **kwargs)

    def generate(
        self,
        options: GenerationOptions | None = None,
        *,
        progress: bool = True,
        callback: StepCallback | None = None,
        stop: StopFlag | None = None,
        **overrides: Any,
    ) -> GenerationResult:
        """Run one job. `overrides` set fields of `GenerationOptions` (e.g. `prompt="..."`)."""
        options = dataclasses.replace(options or GenerationOptions(), **overrides)
        options.validate()
        job = Job(self.components, options)
        if stop is not None:
            return job.run(stop, progress=progress, callback=callback)
        with StopFlag() as flag:
            return job.run(flag, progress=progress, callback=callback)


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


def default_output_path() -> Path:
    return Path("outputs") / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}.mp4"


class Job:
    """One generation job: its conditioning, plan, latent timeline and files."""

    def __init__(self, components: Components, options: GenerationOptions) -> None:
        self.c = components
        self.spec = components.spec
        if options.cfg is None:  # the model's default guidance on the prompt
            options = dataclasses.replace(options, cfg=self.spec.cfg)
        self.options = options
        self.fps = options.fps or self.spec.fps
        self.out = Path(options.out) if options.out else default_output_path()
        if options.resume:
            if options.out is None:
                raise UserError("--resume needs --out: the video whose job should be finished")
        else:
            self.out.parent.mkdir(parents=True, exist_ok=True) if options.out is None else None
            check_output_path(self.out, options.overwrite, VIDEO_SUFFIXES)
            check_job_files(self.out, options.overwrite)
        self.prompt_times = self._prompt_times()  # before the prompts are encoded
        self.cond = prepare(components, options)
        self.plan, self.frames = self._plan()
        self.settings = self._settings()
        self.parts = parts_path(self.out)
        for path in (self.out, sidecar_path(self.out), resume_path(self.out)):  # a kill's leftovers
            remove_litter(path)
        for tmp in self.parts.glob(".section_*.tmp*"):  # the parts folder is the job's own
            tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------------ set-up

    def _plan(self) -> tuple[Plan, int]:
        """The section plan and the exact number of output frames."""
        codec, cond, spec = self.c.codec, self.cond, self.spec
        strategy = self.options.plan or spec.plan
        if cond.existing is not None and strategy not in ("forward", "endpoints"):
            raise UserError(f"--extend continues a video forward; use --plan forward (not {strategy})")
        if round(self.options.seconds * self.fps) < 1:
            raise UserError(
                f"--seconds {self.options.seconds:g} is shorter than one frame at {self.fps:g} fps; "
                f"ask for at least {1 / self.fps:.3g} s"
            )
        needs = PLAN_LAYOUT.get(strategy)
        if spec.layouts and needs not in spec.layouts:
            logger.warning(
                "model %s was trained for %s sections only; --plan %s asks for %s sections and "
                "will give a poor video (use --plan %s)",
                spec.name, "/".join(spec.layouts), strategy, needs, spec.plan,
            )  # fmt: skip
        frames = round(self.options.seconds * self.fps) + cond.existing_frames
        total = max(codec.num_latents(max(frames, 1)), 2)
        existing = 0 if cond.existing is None else cond.existing.shape[2]
        anchors = self._anchors()
        kwargs: dict[str, Any] = {}
        if spec.mode == "released":
            # Enough whole sections to cover the requested frames; the video is then trimmed to
            # exactly that length. (The official demo rounds, num_sections(), and may end short.)
            prefix = existing or 1
            kwargs["sections"] = max(1, math.ceil((total - prefix) / spec.window))
        else:
            kwargs["total"] = max(total, existing + 1 + len(cond.keyframes) + (cond.end is not None))
        try:
            plan = make_plan(
                strategy,
                window=spec.window,
                mode=spec.mode,
                start_image=cond.start is not None,
                end_image=cond.end is not None,
                existing=existing,
                anchors=anchors,
                **kwargs,
            )
        except ValueError as err:
            raise UserError(f"--plan {strategy} with model {spec.name}: {err}") from None
        produced = codec.num_frames(plan.total)
        if spec.mode == "released" and cond.end is not None:
            return plan, produced  # the end image is the last frame: keep every section whole
        return plan, min(frames, produced)

    def _prompt_times(self) -> dict[int, int]:
        """Latent frame -> timeline entry of every prompt change (UserError when two share one)."""
        prompts: dict[int, int] = {}
        entries = self.options.timeline().entries
        for i, (t, _) in enumerate(entries):
            if i == 0:  # the first prompt starts the video: no anchor
                continue
            at = latent_time(self.c, t, self.fps)
            if at in prompts:
                first = entries[prompts[at]][0]
                raise UserError(
                    f"--prompts: entries at {first:g}s and {t:g}s fall on the same latent frame "
                    f"({self.c.codec.time_factor} frames = {self.c.codec.time_factor / self.fps:.3g} s); "
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
            "sampler": o.sampler,
            "shift": o.shift if o.shift is not None else self.spec.shift,
            "guidance": o.guidance if o.guidance is not None else self.spec.guidance,
            "cfg": o.cfg,
            "cfg_rescale": o.cfg_rescale,
            "size": list(self.cond.size),
            **self._boundaries(),
        }

    def _boundaries(self) -> dict[str, Any]:
        """First frames of every section and every latent after the first (`framepack eval
        drift` measures the seams there), in frames of the output video."""
        codec, frames = self.c.codec, self.frames
        first = sorted({codec.num_frames(s.start) for s in self.plan.sections if s.start > 0})
        return {
            "section_frames": codec.time_factor * self.spec.window,
            "latent_frames": codec.time_factor,
            "section_boundaries": [f for f in first if 0 < f < frames],
            "latent_boundaries": [
                f for f in map(codec.num_frames, range(1, self.plan.total)) if 0 < f < frames
            ],
        }

    # ------------------------------------------------------------------ the loop

    def run(self, stop: StopFlag, *, progress: bool, callback: StepCallback | None) -> GenerationResult:
        latents, done = self._timeline()
        writer = VideoWriter(self)
        start = self._resume(latents, done, writer) if self.options.resume else 0
        steps = self.settings["steps"]
        if self.c.on_job_start is not None:
            self.c.on_job_start(tuple(latents.shape[3:]), steps)
        bar = Progress(len(self.plan), steps, enabled=progress, initial=start)
        stopped = False
        for section in self.plan.sections[start:]:
            bar.start_section(self._section_label(section))
            if self.c.on_section_start is not None:
                self.c.on_section_start()
            x = self.sample_section(section, latents, bar, callback, stop)
            if x is None:
                stopped = True
                break
            latents[:, :, section.start : section.stop] = x
            done[section.start : section.stop] = True
            self._save_part(section, x)
            writer.add(latents, done, section)
            writer.write(latents, done, final=section is self.plan.sections[-1])
            bar.end_section()
            if stop:
                stopped = section is not self.plan.sections[-1]
                break
        bar.close()
        if stopped or start == len(self.plan.sections):
            # stopped: keep what was made; all sections saved before this run (killed in the
            # finishing window): write the whole video before the resume data goes
            writer.write(latents, done, final=True)
        if not stopped:
            self._cleanup()
        return GenerationResult(
            self.out, writer.frames, writer.frames / self.fps, stopped, latents, self.plan
        )

    def _section_label(self, section: Section) -> str:
        """Which section, in the output video's seconds, e.g. "section 2 of 8 (0.27-0.53 s)"."""
        codec = self.c.codec
        first = codec.num_frames(section.start) if section.start else 0
        last = min(codec.num_frames(section.stop), self.frames) - 1
        count = len(self.plan.sections)
        return f"section {section.step + 1} of {count} ({first / self.fps:.2f}-{last / self.fps:.2f} s)"

    def _timeline(self) -> tuple[Tensor, Tensor]:
        """The latent timeline (1, C, T, h, w) on the CPU with the known frames filled in."""
        cond, c = self.cond, self.c
        h, w = (s // c.codec.space_factor for s in cond.size)
        shape = (1, c.codec.latent_channels, self.plan.total, h, w)
        latents = torch.zeros(shape)
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

    def sample_section(
        self,
        section: Section,
        latents: Tensor,
        bar: Progress,
        callback: StepCallback | None,
        stop: StopFlag,
    ) -> Tensor | None:
        """Sample one section's latents (1, C, n, h, w); None if stopped mid-section."""
        c, spec, o = self.c, self.spec, self.options
        n = section.stop - section.start
        context = self.context(section, latents)
        target = torch.tensor([section.latent_indices], dtype=torch.int64, device=c.device)
        prompt = self.cond.prompts[section.prompt].to(c.device, c.dtype)
        image = self.cond.image_embeds
        if section.image is not None and section.image < len(self.plan.anchors):
            image = self.cond.keyframe_embeds.get(self.plan.anchors[section.image].time, image)
        image = None if image is None else image.to(c.device, c.dtype)
        guidance_value = self.settings["guidance"]
        guidance = (
            None if guidance_value is None else torch.full((1,), guidance_value * 1000.0, device=c.device)
        )

        def velocity_for(embeds: Any) -> Callable[[Tensor, float], Tensor]:
            def velocity(x: Tensor, sigma: float) -> Tensor:
                t = torch.full((1,), sigma * 1000.0, device=c.device, dtype=c.dtype)
                with torch.no_grad():
                    v = c.transformer(
                        x.to(c.dtype),
                        t,
                        embeds.states,
                        embeds.mask,
                        embeds.pooled,
                        target,
                        context=context,
                        image_embeds=image,
                        guidance=guidance,
                    ).float()
                return x0_to_velocity(x, v, sigma) if spec.prediction == "x0" else v

            return velocity

        negative = None if self.cond.negative is None else self.cond.negative.to(c.device, c.dtype)
        velocity = cfg_velocity(
            velocity_for(prompt),
            velocity_for(negative) if negative else velocity_for(prompt),
            o.cfg,
            o.cfg_rescale,
        )
        h, w = latents.shape[3:]
        shift = self.settings["shift"]
        steps = self.settings["steps"]
        sigmas = (
            get_sigmas(steps, shift=shift) if shift else get_sigmas(steps, seq_len=spec.window * h * w // 4)
        )
        generator = section_generator(o.seed, section.start)
        noise = torch.randn((1, latents.shape[1], n, h, w), generator=generator).to(c.device)

        class Stopped(Exception):
            pass

        def on_step(step: int, x: Tensor, x0: Tensor) -> None:
            bar.step()
            if callback is not None:
                callback(section, step, x0)
            if o.preview:
                write_preview(self, section, step, x0)
            if stop and step < len(sigmas) - 2:
                raise Stopped

        sampler = sample_unipc if o.sampler == "unipc" else sample_euler
        try:
            x = sampler(velocity, noise, sigmas.to(c.device), callback=on_step)
        except Stopped:
            return None
        return x.float().cpu()

    def context(self, section: Section, latents: Tensor) -> PackedContext:
        """The section's packed clean context, from the latent timeline."""
        device, dtype = self.c.device, self.c.dtype
        if section.levels:  # released layouts, index for index
            levels = []
            for lv in section.levels:
                frames = [
                    latents[:, :, f] if f is not None else torch.zeros_like(latents[:, :, 0])
                    for f in lv.frames
                ]
                lat = torch.stack(frames, dim=2)
                idx = torch.tensor([lv.indices], dtype=torch.int64)
                levels.append(PackedLevel(lv.kernel, lat, idx))
            return PackedContext(tuple(levels)).to(device, dtype)
        schedule = parse_schedule(self.spec.schedule)
        hist = list(section.history)  # nearest first
        if schedule.ranking == "time":  # only the nearest frames can be chosen: keep per-section work flat
            hist = hist[: schedule.capacity]
        anchors = list(section.anchors)
        anchor_idx = [self._anchor_index(a, section) for a in anchors]
        ctx = pack(
            latents[:, :, hist],
            torch.tensor([hist], dtype=torch.int64).reshape(1, len(hist)),
            torch.tensor([section.latent_indices], dtype=torch.int64),
            schedule,
            anchors=latents[:, :, anchors] if anchors else None,
            anchor_indices=torch.tensor([anchor_idx], dtype=torch.int64) if anchors else None,
            pad_side=PAD_SIDE.get(self.plan.strategy, "auto"),
        )
        return ctx.to(device, dtype)

    def _anchor_index(self, frame: int, section: Section) -> int:
        """RoPE time of an anchor: its true time, or capped at `max_anchor_gap` from the section."""
        gap = self.spec.max_anchor_gap
        if gap is None:
            return frame
        if frame < section.start:
            return max(frame, section.start - gap)
        return min(frame, section.stop - 1 + gap)

    # ------------------------------------------------------------------ files

    def _save_part(self, section: Section, x: Tensor) -> None:
        """Save the section's latents (its own small file), then the job state pointing past it."""
        self.parts.mkdir(parents=True, exist_ok=True)
        save_part(self.parts / f"section_{section.step:05d}.safetensors", x)
        save_state(
            resume_path(self.out),
            ResumeState(
                history=torch.zeros(0),
                next_section=section.step + 1,
                settings=self.settings,
                seed=self.options.seed,
            ),
        )

    def _resume(self, latents: Tensor, done: Tensor, writer: VideoWriter) -> int:
        """Load the saved sections into the timeline; returns the next section to run.

        The writer sees the sections in their original order, so a cross-faded video (VAE
        codecs) is decoded exactly as in an uninterrupted run.
        """
        if not resume_path(self.out).exists() and not self.parts.exists() and not self.out.exists():
            logger.warning("nothing of %s was saved before it stopped; starting the job", self.out)
            return 0
        state = load_state(resume_path(self.out), expected=self.settings)
        for section in self.plan.sections[: state.next_section]:
            part = self.parts / f"section_{section.step:05d}.safetensors"
            shape = latents[:, :, section.start : section.stop].shape
            latents[:, :, section.start : section.stop] = load_part(part, tuple(shape))
            done[section.start : section.stop] = True
            writer.add(latents, done, section)
        return state.next_section

    def _cleanup(self) -> None:
        """A finished job needs no resume data."""
        for part in sorted(self.parts.glob("section_*.safetensors")):
            part.unlink()
        if self.parts.is_dir():
            self.parts.rmdir()
        resume_path(self.out).unlink(missing_ok=True)


class VideoWriter:
    """Decodes the generated runs of the timeline and rewrites the MP4 atomically.

    Two ways to decode, by codec:
    - exact codecs (the pixel codec, per-frame autoencoders): each run of generated latents is
      decoded whole (cached per run); decoding a window of them would give the same frames.
    - causal video VAEs (`crossfade_decode`, the HunyuanVideo VAE): as the official demo, each new
      section is decoded together with up to `window` latents of the run it extends, and the
      result is cross-faded (`soft_append`, linear weights) over those latents' frames with the
      pixels decoded before. The run's frame count stays exactly `codec.num_frames(run length)`.
      Sections must be added in generation order (`add`), also when resuming.

    Rewriting grows with the video; it is throttled (WRITE_THROTTLE) so that writing takes at
    most a quarter of the time, and in-progress copies use x264's fastest preset (the final
    write uses "medium"). The resume data is saved after every section regardless.
    The final write always happens.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self.frames = 0
        self.crossfade = decodes_in_windows(job.c.codec)
        self._last_write = 0.0
        self._write_cost = 0.0
        self._cache: dict[tuple[int, int], Tensor] = {}

    def add(self, latents: Tensor, done: Tensor, section: Section) -> None:
        """Decode a just generated section into the cached pixels (cross-fading codecs only)."""
        if not self.crossfade:
            return
        from framepack.hunyuan.vae import soft_append

        codec, window = self.job.c.codec, self.job.spec.window
        s, e = section.start, section.stop
        before = done.clone()
        before[s:e] = False
        runs = _runs(before)
        left = next((r for r in runs if r[1] == s), None)
        right = next((r for r in runs if r[0] == e), None)
        fade_left = left is not None and left in self._cache and s - left[0] >= window
        fade_right = right is not None and right in self._cache and right[1] - e >= window
        a, b = (left[0] if left else s), (right[1] if right else e)
        c0 = s - window if fade_left else a
        c1 = e + window if fade_right else b
        video = self._decode(latents, c0, c1)
        if fade_left:
            assert left is not None
            video = soft_append(self._cache[left], video, codec.num_frames(s - c0))
        if fade_right:
            assert right is not None
            video = soft_append(video, self._cache[right], codec.num_frames(c1 - e))
        for run in (left, right):
            if run is not None:
                self._cache.pop(run, None)
        self._cache[(a, b)] = video

    def write(self, latents: Tensor, done: Tensor, *, final: bool) -> None:
        now = time.perf_counter()
        if not final and now - self._last_write < WRITE_THROTTLE * self._write_cost:
            return
        pixels = self.decode(latents, done)
        if pixels.shape[2] > self.job.frames and bool(done.all()):
            pixels = pixels[:, :, : self.job.frames]
        write_video(
            self.job.out,
            pixels[0],
            self.job.fps,
            crf=self.job.options.crf,
            metadata=self.job.settings,
            preset="medium" if final else "ultrafast",  # in-progress copies: fast; the last: small
            deterministic=final,  # same frames, same file
        )
        write_sidecar(sidecar_path(self.job.out), {**self.job.settings, "complete": bool(done.all())})
        self.frames = int(pixels.shape[2])
        self._last_write = time.perf_counter()
        self._write_cost = self._last_write - now

    def decode(self, latents: Tensor, done: Tensor) -> Tensor:
        """Pixels (1, 3, F, H, W) of every generated run, in time order (runs decoded once)."""
        runs = _runs(done)
        pieces = []
        for run in runs:
            if run not in self._cache:
                self._cache[run] = self._decode(latents, *run)
            pieces.append(self._cache[run])
        if not self.crossfade:
            self._cache = {r: p for r, p in self._cache.items() if r in runs}
        return torch.cat(pieces, dim=2)

    def _decode(self, latents: Tensor, start: int, stop: int) -> Tensor:
        """Pixels (1, 3, F, H, W) of latents [start, stop), float32 on the CPU."""
        with torch.no_grad():
            lat = latents[:, :, start:stop].to(self.job.c.device, torch.float32)
            return self.job.c.codec.decode(lat).float().clamp(-1, 1).cpu()


def decodes_in_windows(codec: Any) -> bool:
    """Whether `codec` is decoded section by section with the official cross-fade.

    A codec says so with a `crossfade_decode` attribute; without one, the HunyuanVideo VAE does
    (its causal decoder makes a window's pixels depend on where the window starts) and every
    other codec is decoded in whole runs.
    """
    flag = getattr(codec, "crossfade_decode", None)
    if flag is not None:
        return bool(flag)
    from framepack.hunyuan.vae import HunyuanVideoVAE

    return isinstance(codec, HunyuanVideoVAE)


def _runs(done: Tensor) -> list[tuple[int, int]]:
    """Maximal [start, stop) runs of True in a bool vector."""
    runs, start = [], None
    for i, d in enumerate([*done.tolist(), False]):
        if d and start is None:
            start = i
        elif not d and start is not None:
            runs.append((start, i))
            start = None
    return runs


def write_preview(job: Job, section: Section, step: int, x0: Tensor) -> None:
    """A quick decoded preview of the current estimate: the section's frames side by side (PNG)."""
    from PIL import Image

    folder = Path(job.options.preview)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        pixels = job.c.codec.decode(x0.to(job.c.device, torch.float32)).float().clamp(-1, 1).cpu()
    frames = ((pixels[0] + 1) * 127.5).round().byte().permute(1, 2, 3, 0)  # (F, H, W, 3)
    pick = frames[:: max(1, math.ceil(frames.shape[0] / 8))]
    strip = torch.cat(list(pick), dim=1).numpy()
    Image.fromarray(strip).save(folder / f"section{section.step:04d}_step{step:03d}.png")


def load_settings(video: str | Path) -> dict[str, Any]:
    """The settings a FramePack video was made with (from its JSON sidecar)."""
    return json.loads(sidecar_path(video).read_text())
