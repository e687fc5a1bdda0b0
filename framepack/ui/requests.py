"""The page's form <-> `GenerationOptions`, with no web framework involved (tested alone).

`options_from_form` turns the values of the page's controls into the options the CLI would
build, so the same `GenerationOptions.validate()` refuses bad input with the same one-line
`UserError`; the few things only a form can get wrong (a keyframe image without a time, a
fractional seed) get one line in the same style. `form_from_settings` goes back: a finished
video's sidecar settings as control values ("load these settings").
"""

from __future__ import annotations

import math
import re
import secrets
from pathlib import Path
from typing import Any

from framepack.errors import UserError
from framepack.options import PLANS, GenerationOptions

KEYFRAME_SLOTS = 3
MODEL_DEFAULT = "model default"
# The form's controls, in the order the page passes their values to `options_from_form`.
FORM = (
    "image",
    "no_image",
    "end_image",
    *(f"keyframe{i}_{part}" for i in range(KEYFRAME_SLOTS) for part in ("time", "image")),
    "prompts",
    "negative_prompt",
    "seconds",
    "plan",
    "seed",
    "random_seed",
    "steps",
    "sampler",
    "fps",
    "shift",
    "guidance",
    "cfg",
    "cfg_rescale",
    "crf",
    "extend",
)
_TIMED = re.compile(r"^\s*[0-9]*\.?[0-9]+\s*s\s*:")


def options_from_form(form: dict[str, Any], outputs: Path) -> GenerationOptions:
    """The options of a form (`FORM` names -> control values). Raises UserError (one line).

    Images are file paths (uploads); `extend` is a video name inside `outputs` or empty.
    Empty numbers mean "the model's default". `random_seed` draws the seed recorded in the job.
    """
    timeline = (form.get("prompts") or "").strip()
    lines = [line for line in timeline.splitlines() if line.strip()]
    single = len(lines) == 1 and not _TIMED.match(lines[0])
    seed = secrets.randbelow(2**31) if form.get("random_seed") else _whole(form.get("seed"), "--seed")
    options = GenerationOptions(
        prompt=lines[0].strip() if single else None,
        prompts="\n".join(lines) if lines and not single else None,
        negative_prompt=form.get("negative_prompt") or "",
        image=None if form.get("no_image") else form.get("image") or None,
        no_image=bool(form.get("no_image")),
        end_image=form.get("end_image") or None,
        keyframes=_keyframes(form),
        extend=_extend(form.get("extend"), outputs),
        seconds=_number(form.get("seconds"), "--seconds", 5.0),
        fps=_whole(form.get("fps"), "--fps", None),
        seed=31337 if seed is None else seed,
        steps=_whole(form.get("steps"), "--steps", None),
        plan=None if form.get("plan") in (None, "", MODEL_DEFAULT) else form["plan"],
        sampler=form.get("sampler") or "unipc",
        shift=_number(form.get("shift"), "--shift", None),
        guidance=_number(form.get("guidance"), "--guidance", None),
        cfg=_number(form.get("cfg"), "--cfg", None),
        cfg_rescale=_number(form.get("cfg_rescale"), "--cfg-rescale", 0.0),
        crf=_whole(form.get("crf"), "--crf", 16),
    )
    options.validate()
    return options


def _keyframes(form: dict[str, Any]) -> list[tuple[float, str]]:
    keyframes = []
    for i in range(KEYFRAME_SLOTS):
        time, image = form.get(f"keyframe{i}_time"), form.get(f"keyframe{i}_image")
        if image and time is None:
            raise UserError(
                f"--keyframe: keyframe {i + 1} has an image but no time; give its time in seconds"
            )
        if time is not None and not image:
            raise UserError(
                f"--keyframe: keyframe {i + 1} has a time but no image; upload one or clear the time"
            )
        if image:
            keyframes.append((_number(time, "--keyframe", 0.0), str(image)))
    return keyframes


def _extend(name: str | None, outputs: Path) -> str | None:
    """A video to extend: a name inside `outputs` only (the page never reads other files)."""
    if not name:
        return None
    path = (outputs / name).resolve()
    if not path.is_relative_to(outputs.resolve()) or path.suffix != ".mp4" or not path.is_file():
        raise UserError(f"--extend: no video {name!r} in the outputs folder; pick one in the gallery")
    return str(path)


def _number(value: Any, flag: str, default: float | None) -> float | None:
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{flag} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise UserError(f"{flag} must be a finite number, got {value}")
    return number


def _whole(value: Any, flag: str, default: int | None = None) -> int | None:
    number = _number(value, flag, None)
    if number is None:
        return default
    if number != int(number):
        raise UserError(f"{flag} must be a whole number, got {number:g}")
    return int(number)


def form_from_settings(
    settings: dict[str, Any], outputs: Path, example_image: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Control values from a video's sidecar settings ("load these settings"), and notes on
    what could not be loaded.

    Images outside `outputs` are left empty (the page shows files from the outputs folder only);
    the model's example image is an empty start image, as in the form.
    """
    form: dict[str, Any] = {name: None for name in FORM}
    notes = [
        f"{label} {Path(path).name} is outside the outputs folder; upload it again"
        for label, path in [
            ("the start image", settings.get("image")),
            ("the end image", settings.get("end_image")),
            *(("a keyframe image", p) for _, p in settings.get("keyframes") or []),
        ]
        if path and path != example_image and _inside(path, outputs) is None
    ]
    keyframes = [(t, _inside(p, outputs)) for t, p in settings.get("keyframes") or []]
    for i, (time, image) in enumerate(keyframes[:KEYFRAME_SLOTS]):
        form[f"keyframe{i}_time"], form[f"keyframe{i}_image"] = time, image
    prompts = str(settings.get("prompts") or "")
    form.update(
        image=_inside(settings.get("image"), outputs),
        no_image=settings.get("image") is None,
        end_image=_inside(settings.get("end_image"), outputs),
        prompts="\n".join(part.strip() for part in prompts.split(";") if part.strip()),
        negative_prompt=settings.get("negative_prompt") or "",
        seconds=settings.get("seconds"),
        plan=settings.get("plan") if settings.get("plan") in PLANS else MODEL_DEFAULT,
        seed=settings.get("seed"),
        random_seed=False,
        steps=settings.get("steps"),
        sampler=settings.get("sampler") or "unipc",
        fps=settings.get("fps"),
        shift=settings.get("shift"),
        guidance=settings.get("guidance"),
        cfg=settings.get("cfg"),
        cfg_rescale=settings.get("cfg_rescale"),
        crf=None,
        extend=_name_inside(settings.get("extend"), outputs),
    )
    return form, notes


def _inside(path: str | None, outputs: Path) -> str | None:
    if not path:
        return None
    resolved = Path(path).resolve()
    return str(resolved) if resolved.is_relative_to(outputs.resolve()) and resolved.is_file() else None


def _name_inside(path: str | None, outputs: Path) -> str | None:
    inside = _inside(path, outputs)
    return None if inside is None else str(Path(inside).relative_to(outputs.resolve()))
