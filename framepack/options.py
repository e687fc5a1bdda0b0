"""What a user asks of one generation job, validated before any model is loaded.

`GenerationOptions` is shared by the CLI, the Python pipeline and (later) the web UI, so every
entry point refuses the same bad input with the same one-line message (`UserError`).
"""

from __future__ import annotations

import errno
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from framepack.errors import UserError
from framepack.plans import STRATEGIES
from framepack.timeline import PromptTimeline, parse_timeline

if TYPE_CHECKING:
    import torch

PLANS = STRATEGIES  # the section orders of framepack.plans
SAMPLERS = ("unipc", "euler")
RANKINGS = ("time", "similarity", "hybrid")  # framepack.packing.RANKINGS for history frames
DTYPES = ("auto", "fp32", "fp16", "bf16")


@dataclass
class GenerationOptions:
    """Options of one job. `None` means "the model's default" (see the model's `framepack.json`).

    Times are in seconds of the output video; keyframes are `(seconds, image path)` pairs.
    """

    prompt: str | None = None
    prompts: str | None = None  # a timeline "0s: ...; 4s: ..."; overrides `prompt`
    negative_prompt: str = ""
    image: str | None = None
    end_image: str | None = None
    keyframes: list[tuple[float, str]] = field(default_factory=list)
    extend: str | None = None
    seconds: float = 5.0
    fps: int | None = None
    seed: int = 31337
    steps: int | None = None
    plan: str | None = None
    sampler: str | None = None  # "unipc" or "euler"; None: the model's (framepack.json)
    shift: float | None = None
    guidance: float | None = None  # distilled guidance (released models: 10)
    cfg: float | None = None  # real classifier-free guidance; 1 = off; None: the model's
    cfg_rescale: float = 0.0
    out: str | None = None
    overwrite: bool = False
    resume: bool = False
    preview: str | None = None
    crf: int = 16
    no_image: bool = False  # text-to-video: do not fall back to the model's example image
    # Drift research (docs/drift.md); general-mode models only.
    history_noise: float = 0.0  # std of noise added to generated history (diffusion forcing)
    history_cfg: float = 1.0  # guidance against dropped history (1 = off)
    ranking: str | None = None  # history ranking: time, similarity, hybrid (None: the model's)

    def timeline(self, default_prompt: str = "") -> PromptTimeline:
        """The prompt timeline (a single prompt is a one-entry timeline)."""
        if self.prompts is not None:
            try:
                return parse_timeline(self.prompts)
            except ValueError as err:
                raise UserError(f"--prompts: {err}") from None
        return PromptTimeline.single(self.prompt if self.prompt is not None else default_prompt)

    def to_json(self) -> dict:
        data = asdict(self)
        data["keyframes"] = [[t, p] for t, p in self.keyframes]
        return data

    def validate(self) -> None:
        """Check everything that needs no model; raises UserError with a one-line message."""
        if not self.seconds > 0:
            raise UserError(f"--seconds must be > 0, got {self.seconds:g}")
        if self.seconds > 3600:
            raise UserError(f"--seconds {self.seconds:g} is over one hour; ask for at most 3600")
        if self.fps is not None and not 1 <= self.fps <= 120:
            raise UserError(f"--fps must be between 1 and 120, got {self.fps}")
        if self.steps is not None and not 1 <= self.steps <= 1000:
            raise UserError(f"--steps must be between 1 and 1000, got {self.steps}")
        if self.plan is not None and self.plan not in PLANS:
            raise UserError(f"unknown plan {self.plan!r}; choose one of: {', '.join(PLANS)}")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {self.sampler!r}; choose one of: {', '.join(SAMPLERS)}")
        if self.cfg is not None and not (math.isfinite(self.cfg) and self.cfg >= 1.0):
            raise UserError(f"--cfg must be a number >= 1 (1 turns real guidance off), got {self.cfg:g}")
        if self.guidance is not None and not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise UserError(f"--guidance must be a number >= 0, got {self.guidance:g}")
        if not 0.0 <= self.cfg_rescale <= 1.0:
            raise UserError(f"--cfg-rescale must be in [0, 1], got {self.cfg_rescale:g}")
        if not (math.isfinite(self.history_noise) and 0 <= self.history_noise <= 10):
            raise UserError(f"--history-noise must be a number between 0 and 10, got {self.history_noise:g}")
        if not (math.isfinite(self.history_cfg) and self.history_cfg >= 1.0):
            raise UserError(f"--history-cfg must be a number >= 1 (1 turns it off), got {self.history_cfg:g}")
        if self.ranking is not None and self.ranking not in RANKINGS:
            raise UserError(f"unknown ranking {self.ranking!r}; choose one of: {', '.join(RANKINGS)}")
        if not 0 <= self.crf <= 51:
            raise UserError(f"--crf must be between 0 and 51, got {self.crf}")
        if self.shift is not None and not (math.isfinite(self.shift) and self.shift > 0):
            raise UserError(f"--shift must be a number > 0, got {self.shift:g}")
        for text, flag in (
            (self.prompt, "--prompt"),
            (self.prompts, "--prompts"),
            (self.negative_prompt, "--negative-prompt"),
        ):
            if text is not None and not _is_utf8(text):
                raise UserError(f"{flag} holds bytes that are not valid UTF-8; check the shell's encoding")
        self.timeline()  # syntax errors
        if self.prompts is not None and self.timeline().entries[-1][0] >= self.seconds:
            last = self.timeline().entries[-1][0]
            raise UserError(f"--prompts: entry at {last:g}s starts after the video ends ({self.seconds:g}s)")
        for path, flag in [
            (self.image, "--image"),
            (self.end_image, "--end-image"),
            (self.extend, "--extend"),
        ]:
            if path is not None and not Path(path).is_file():
                raise UserError(f"{flag}: no such file: {path}")
        for time, path in self.keyframes:
            if not 0 <= time <= self.seconds:
                raise UserError(
                    f"{keyframe_label(time, path)}: {time:g}s is outside the video (0 to "
                    f"{self.seconds:g}s); give a time within it, or a longer --seconds"
                )
            if not Path(path).is_file():
                raise UserError(f"{keyframe_label(time, path)}: no such file")
        if self.no_image and self.image is not None:
            raise UserError("--no-image asks for text-to-video but --image gives a start image; drop one")
        if self.preview is not None:
            _check_folder(Path(self.preview), "--preview")
        times = [t for t, _ in self.keyframes]
        if len(set(times)) != len(times):
            raise UserError("--keyframe: two keyframes at the same time; give each time once")


def _check_folder(path: Path, flag: str) -> None:
    """A folder that exists and takes files, or can be created: no file where it or one of its
    parents should be, and its nearest existing folder takes a new file (probed with a hidden
    temporary file, removed at once; `/proc`, a read-only or unwritable folder are refused)."""
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise UserError(f"{flag} {path}: {folder} is a file, not a folder; give a folder")
            _check_writable(path, folder, flag)
            return


def _check_writable(path: Path, folder: Path, flag: str) -> None:
    """Refuse (UserError) an existing `folder` (`path` or its nearest existing parent) that
    cannot take a new file."""
    import tempfile

    cause = None
    if not os.access(folder, os.W_OK | os.X_OK):
        cause = os.strerror(errno.EACCES)
    else:
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".framepack-probe-"):
                pass
        except OSError as err:
            cause = err.strerror or str(err)
    if cause is not None:
        where = "" if folder == path else f" ({folder}, where it would be created)"
        raise UserError(
            f"{flag} {path}: cannot write in this folder{where} ({cause}); give a folder you can write in"
        )


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: undecodable bytes passed through by Python
        return False
    return True


def keyframe_label(seconds: float, path: str) -> str:
    """How a message names a keyframe: `--keyframe at 4s (pose.png)` (not the flag's `4=pose.png`,
    which reads as an equation)."""
    return f"--keyframe at {seconds:g}s ({path})"


def parse_keyframe(text: str) -> tuple[float, str]:
    """`"4.5=path.png"` or `"4.5s=path.png"` -> `(4.5, "path.png")`."""
    time, sep, path = text.partition("=")
    if not sep or not path:
        raise UserError(f"--keyframe {text!r}: expected TIME=PATH, e.g. --keyframe 4s=pose.png")
    try:
        seconds = float(time.strip().removesuffix("s"))
    except ValueError:
        raise UserError(f"--keyframe {text!r}: {time!r} is not a time in seconds, e.g. 4 or 4.5s") from None
    return seconds, path


@dataclass
class LoadOptions:
    """How to load a model: where its parts are, on which device, in which dtype."""

    model_dir: str | None = None
    device: str = "auto"
    dtype: str = "auto"  # one of DTYPES
    low_vram: bool = False
    vram_gb: float | None = None  # a GPU memory budget: low-VRAM mode keeps every phase under it
    pinned_gb: float | None = None  # pinned host memory for resting blocks (None: RAM / 4, <= 8 GiB)
    teacache: float = 0.0
    loras: list[str] = field(default_factory=list)
    bucket: int | None = None  # resolution buckets around bucket^2 pixels (released models; None: 640)

    def vram_budget(self) -> int | None:
        """`vram_gb` in bytes (GiB), or None."""
        return None if self.vram_gb is None else int(self.vram_gb * 2**30)

    def torch_device(self) -> torch.device:
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise UserError(
                f"--device {self.device!r} is not a device; use auto, cpu, cuda or cuda:N"
            ) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {self.device}: CUDA is not available here; use --device cpu")
        return device
