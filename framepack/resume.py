"""A job's files beside its video, so a stopped or crashed render is never lost.

After each section the pipeline (through `SectionFiles`) saves that section's latents in their
own small file, `out.resume.safetensors.parts/section_00003.safetensors` (with a SHA-256 of their
bytes), then the job's `ResumeState` in `out.resume.safetensors`: the plan position, settings and
seed as JSON in a safetensors header. Every write is atomic (a temporary file, then a rename); no
pickles are involved. Resuming loads the parts of the sections before `next_section`, after
checking that the settings are the job's own.

Randomness needs no saved RNG state: the noise of each section is drawn from its own generator,
`section_generator(seed, section_id)`, derived from the job seed and the section id by a hash.
A resumed job therefore draws exactly the noise the uninterrupted job would have drawn, whatever
order the plan visits sections in. (The released code draws all sections from one noise stream;
we do not, so resumption and endpoint-first plans stay reproducible.)

`StopFlag` turns Ctrl+C / SIGTERM into a request to stop after the current step, so the loop can
save its state and the partial video before exiting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import Tensor

from framepack.disk import writing
from framepack.errors import UserError
from framepack.video import atomic_path, settings_json

FORMAT = "framepack-resume"
FORMAT_VERSION = 1


@dataclasses.dataclass
class ResumeState:
    """Where a stopped job stands: the sections before `next_section` (plan order) are saved.

    next_section: index, in the plan's order, of the next section to generate.
    settings: the job's settings (prompts, seed, model, plan, steps, version...); JSON values.
    seed: the job seed; section noise comes from `section_generator(seed, section_id)`.
    replacing: the job replaces an older video (`--overwrite`): the old one stays until the new
        one is complete, also across `--resume`.
    """

    next_section: int
    settings: dict[str, Any]
    seed: int
    replacing: bool = False


def resume_path(video_path: str | os.PathLike) -> Path:
    """Where the resume state of a video lives: `out.mp4` -> `out.resume.safetensors`."""
    return Path(video_path).with_suffix(".resume.safetensors")


def parts_path(video_path: str | os.PathLike) -> Path:
    """The folder of a job's per-section latents: `NAME.resume.safetensors.parts`."""
    return Path(str(resume_path(video_path)) + ".parts")


def save_state(path: str | os.PathLike, state: ResumeState) -> Path:
    """Save `state` atomically to `path` (a `.safetensors` file, see `resume_path`).

    The previous state at `path`, if any, stays intact until the new one is complete.
    """
    from safetensors.torch import save_file

    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "state": settings_json(
            {
                "next_section": int(state.next_section),
                "seed": int(state.seed),
                "settings": state.settings,
                "replacing": bool(state.replacing),
            }
        ),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({}, str(tmp), metadata=header)  # the state is all in the header
    return path


def load_state(path: str | os.PathLike, expected: Mapping[str, Any] | None = None) -> ResumeState:
    """Load a resume state; with `expected`, check that those settings match the saved ones.

    Raises UserError if the file is missing, corrupt, of another format version, or was made
    with different settings than `expected` (the message names the first setting that differs).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"no resume state at {path}; run without --resume to start the job from the beginning"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        if header.get("format") != FORMAT:
            raise UserError(
                f"{path} is not a FramePack resume state; point --resume at a .resume.safetensors file"
            )
        version = header.get("format_version")
        if version != str(FORMAT_VERSION):
            raise UserError(
                f"resume state {path} has format version {version}, this FramePack reads {FORMAT_VERSION}; "
                "resume with the FramePack version that made it, or start over"
            )
        fields = json.loads(header["state"])
        state = ResumeState(
            next_section=int(fields["next_section"]),
            settings=dict(fields["settings"]),
            seed=int(fields["seed"]),
            replacing=fields.get("replacing", False) is True,  # older states: False
        )
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(
            f"resume state {path} is unreadable ({type(err).__name__}: {str(err)[:80]}); "
            "delete it and start over"
        ) from None
    if expected is not None:
        check_settings(state.settings, expected, path)
    return state


def check_settings(saved: Mapping[str, Any], expected: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Raise UserError naming the first key of `expected` whose value differs from `saved`.

    Values are compared after a JSON round trip, so tuples equal lists and paths equal strings.
    """
    saved_json = json.loads(settings_json(saved))
    for key, value in json.loads(settings_json(expected)).items():
        if key not in saved_json:
            raise UserError(
                f"resume state {path} does not record the setting {key!r}; it was made by another "
                "FramePack version, start over without --resume"
            )
        if saved_json[key] != value:
            raise UserError(
                f"resume state {path} was made with {key}={_short(saved_json[key])}, but this run asks "
                f"{key}={_short(value)}; use the same settings to resume, or start over without --resume"
            )


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SectionFiles:
    """The per-section latents and the resume state of the job writing `video`.

    `save` after each section, `load` when resuming, `cleanup` once the video is finished;
    `remove_litter` first removes what a kill left half-written (temporary files only).
    """

    def __init__(self, video: str | os.PathLike) -> None:
        self.video = Path(video)
        self.state = resume_path(video)
        self.parts = parts_path(video)
        self.replacing = False  # the job replaces an older video (ResumeState.replacing)

    def part(self, step: int) -> Path:
        return self.parts / f"section_{step:05d}.safetensors"

    def exists(self) -> bool:
        """Whether anything of the job was saved (the state, a part or the video)."""
        return self.state.exists() or self.parts.exists() or self.video.exists()

    def start(self, settings: dict[str, Any], seed: int, *, replacing: bool = False) -> None:
        """Save the state of a job that has made nothing yet (`next_section` 0), so a job killed
        before its first section resumes (from the start) like any other. `replacing`: the job
        replaces an older video, which must stay until the new one is complete."""
        self.replacing = replacing
        save_state(self.state, ResumeState(0, settings, seed, replacing))

    def was_replacing(self) -> bool:
        """Whether the saved job replaces an older video (read from its state; False without one)."""
        if self.state.is_file():
            self.replacing = load_state(self.state).replacing
        return self.replacing

    def remove_litter(self) -> None:
        for tmp in self.parts.glob(".section_*.tmp*"):  # the parts folder is the job's own
            tmp.unlink(missing_ok=True)

    def save(self, step: int, latents: Tensor, settings: dict[str, Any], seed: int) -> None:
        """Save section `step`'s latents (1, C, n, h, w), then the state pointing past it."""
        with writing(self.parts):
            self.parts.mkdir(parents=True, exist_ok=True)
        save_part(self.part(step), latents)
        save_state(self.state, ResumeState(step + 1, settings, seed, self.replacing))

    def next_section(self, settings: dict[str, Any]) -> int:
        """The first section not saved (UserError if the saved state has other settings)."""
        return load_state(self.state, expected=settings).next_section

    def load(self, step: int, shape: tuple[int, ...]) -> Tensor:
        return load_part(self.part(step), shape)

    def cleanup(self) -> None:
        """A finished job needs no resume data."""
        for part in sorted(self.parts.glob("section_*.safetensors")):
            part.unlink()
        if self.parts.is_dir():
            self.parts.rmdir()
        self.state.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Per-section latents and randomness
# --------------------------------------------------------------------------------------------


def save_part(path: str | os.PathLike, latents: Tensor) -> Path:
    """Write one section's latents atomically with a SHA-256 of their bytes (checked on load)."""
    from safetensors.torch import save_file

    x = latents.detach().cpu().contiguous()
    with atomic_path(path) as tmp:
        save_file({"latents": x}, str(tmp), metadata={"sha256": _digest(x)})
    return Path(path)


def load_part(path: str | os.PathLike, shape: tuple[int, ...]) -> Tensor:
    """Read a section's latents saved by `save_part`; UserError (changing nothing) if the file is
    missing, unreadable, of another shape, or its bytes do not match the saved checksum."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    hint = "nothing was changed; start the job over with --overwrite"
    if not path.is_file():
        raise UserError(f"resume data is incomplete: {path} is missing; {hint}")
    try:
        with safe_open(str(path), framework="pt") as f:
            digest = (f.metadata() or {}).get("sha256")
            x = f.get_tensor("latents")
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as err:
        raise UserError(f"resume part {path} is damaged ({err}); {hint}") from None
    if tuple(x.shape) != tuple(shape):
        raise UserError(
            f"resume part {path} holds shape {tuple(x.shape)}, the job needs {tuple(shape)}; {hint}"
        )
    if digest is not None and digest != _digest(x):
        raise UserError(f"resume part {path} is damaged (checksum mismatch); {hint}")
    return x


def _digest(x: Tensor) -> str:
    return hashlib.sha256(x.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def section_seed(seed: int, section_id: int | str) -> int:
    """A 63-bit seed for one section: BLAKE2b of the job seed and the section id.

    Distinct (seed, section) pairs give unrelated seeds (unlike `seed + section`, where
    seed 1 section 0 equals seed 0 section 1); the value is stable across runs and machines.
    """
    message = f"framepack-section:{int(seed)}:{section_id}".encode()
    digest = hashlib.blake2b(message, digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def section_generator(
    seed: int, section_id: int | str, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A torch.Generator on `device` seeded with `section_seed(seed, section_id)`."""
    generator = torch.Generator(device=device)
    generator.manual_seed(section_seed(seed, section_id))
    return generator


# --------------------------------------------------------------------------------------------
# Graceful stop
# --------------------------------------------------------------------------------------------


def _default_notice(signum: int) -> None:
    name = signal.Signals(signum).name
    print(
        f"\n{name} received: stopping after the current step and saving (press Ctrl+C again to abort now)",
        file=sys.stderr,
        flush=True,
    )


class StopFlag:
    """Context manager that turns SIGINT/SIGTERM into a "stop after this step" request.

    Inside the `with` block, the first SIGINT or SIGTERM sets the flag (`bool(flag)` becomes
    true) and calls `on_signal(signum)` (default: one line on stderr); the loop should check the
    flag between steps, save and return. A second SIGINT raises KeyboardInterrupt at once.
    The previous handlers are restored on exit. Outside the main thread no handlers can be
    installed; the flag then only reacts to `request()` (e.g. a UI stop button).

        with StopFlag() as stop:
            for section in plan:
                ...
                if stop:
                    save_state(...); break
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, on_signal: Callable[[int], None] | None = _default_notice) -> None:
        self.on_signal = on_signal
        self.signum: int | None = None
        self._requested = False
        self._previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self._requested

    @property
    def requested(self) -> bool:
        """True once a stop was requested (by a signal or `request()`)."""
        return self._requested

    def request(self) -> None:
        """Ask the loop to stop after the current step (thread-safe: sets a flag)."""
        self._requested = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        first = not self._requested
        self._requested = True
        self.signum = signum if self.signum is None else self.signum
        if first and self.on_signal is not None:
            self.on_signal(signum)

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            # None means the handler was not installed from Python; the default is the best guess.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
