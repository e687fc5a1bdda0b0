"""The page's form <-> `GenerationOptions`, with no web framework involved (tested alone).

`options_from_form` turns the values of the page's controls into the options the CLI would
build, so the same `GenerationOptions.validate()` refuses bad input with the same one-line
`UserError`; the few things only a form can get wrong (a keyframe image without a time, a
fractional seed, a time cell that is not a number) get one line in the same style. The prompt
timeline is a table of rows `[seconds, prompt]` (`timeline_from_rows`): its rows become the
CLI's `--prompts` text, one `<seconds>s: <prompt>` entry per row, so `framepack.timeline` checks
them. `form_from_settings` goes back: a finished video's sidecar settings as control values
("load these settings"); `check_upload` checks an uploaded image as the queue will.
"""

from __future__ import annotations

import math
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from framepack.errors import UserError
from framepack.options import PLANS, GenerationOptions
from framepack.queue.store import check_image_file
from framepack.timeline import parse_timeline

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
TIMELINE_HEADERS = ["time (s)", "prompt"]
UPLOAD_FLAGS = {
    "image": "--image",
    "end_image": "--end-image",
    **{f"keyframe{i}_image": f"--keyframe (keyframe {i + 1})" for i in range(KEYFRAME_SLOTS)},
}


def options_from_form(form: dict[str, Any], outputs: Path) -> GenerationOptions:
    """The options of a form (`FORM` names -> control values). Raises UserError (one line).

    Images are file paths (uploads); `extend` is a video name inside `outputs` or empty.
    Empty numbers mean "the model's default". `random_seed` draws the seed recorded in the job.
    A malformed request (not a mapping, a value of the wrong type) gets one line too; a field
    left out is an empty one.
    """
    if not isinstance(form, dict):
        raise UserError(f"malformed request: expected the form's fields by name, got {type(form).__name__}")
    prompt, prompts = timeline_from_rows(form.get("prompts"))
    seed = secrets.randbelow(2**31) if form.get("random_seed") else _whole(form.get("seed"), "--seed")
    options = GenerationOptions(
        prompt=prompt,
        prompts=prompts,
        negative_prompt=_text_value(form.get("negative_prompt"), "--negative-prompt") or "",
        image=None if form.get("no_image") else _path(form.get("image"), "--image"),
        no_image=bool(form.get("no_image")),
        end_image=_path(form.get("end_image"), "--end-image"),
        keyframes=_keyframes(form),
        extend=_extend(_text_value(form.get("extend"), "--extend"), outputs),
        seconds=_number(form.get("seconds"), "--seconds", 5.0),
        fps=_whole(form.get("fps"), "--fps", None),
        seed=31337 if seed is None else seed,
        steps=_whole(form.get("steps"), "--steps", None),
        plan=_choice(form.get("plan"), "--plan"),
        sampler=_choice(form.get("sampler"), "--sampler"),
        shift=_number(form.get("shift"), "--shift", None),
        guidance=_number(form.get("guidance"), "--guidance", None),
        cfg=_number(form.get("cfg"), "--cfg", None),
        cfg_rescale=_number(form.get("cfg_rescale"), "--cfg-rescale", 0.0),
        crf=_whole(form.get("crf"), "--crf", 16),
    )
    options.validate()
    return options


def timeline_from_rows(rows: Any) -> tuple[str | None, str | None]:
    """`(prompt, prompts)` of the timeline editor's rows `[[seconds, prompt], ...]`.

    Blank rows are skipped; no rows: the model's prompt `(None, None)`; one row without a time:
    the prompt of the whole video `(prompt, None)`; otherwise the CLI's `--prompts` text, one
    `<seconds>s: <prompt>` line per row, which `GenerationOptions.validate()` then checks
    (times increasing, no empty prompt, none after the video's end) with the CLI's messages.
    Raises UserError for what only a table can hold: a time that is not a number, a ';' in a
    prompt (the CLI's entry separator).
    """
    entries: list[tuple[float | None, str]] = []
    for row in _rows(rows):
        cells = [*row, None, None][:2]
        time, text = _cell_seconds(cells[0]), " ".join(str(cells[1] or "").split())
        if time is None and not text:
            continue
        number = len(entries) + 1
        if isinstance(time, str):
            raise UserError(
                f"--prompts: prompt timeline entry {number} ({text!r}): the time {time!r} is not a "
                "number of seconds"
            )
        if ";" in text:
            raise UserError(
                f"--prompts: prompt timeline entry {number} ({text!r}): ';' separates timeline "
                "entries; put each prompt in its own row"
            )
        entries.append((time, text))
    if not entries:
        return None, None
    if len(entries) == 1 and entries[0][0] is None:
        return entries[0][1], None
    lines = [text if time is None else f"{_seconds_text(time)}s: {text}" for time, text in entries]
    return None, "\n".join(lines)


def rows_from_timeline(text: str | None) -> list[list[Any]]:
    """The editor's rows of a timeline text (`"0s: a; 4s: b"`, or one plain prompt)."""
    text = (_text_value(text, "--prompts") or "").strip()
    if not text:
        return [[None, ""]]
    try:
        return [[time, prompt] for time, prompt in parse_timeline(text).entries]
    except ValueError:
        return [[None, text]]


def add_timeline_row(rows: Any) -> list[list[Any]]:
    """The rows with one more, one second after the latest time (0 for the first)."""
    rows = [list(row) for row in _rows(rows) if row]
    times = [time for time in (_cell_seconds(row[0]) for row in rows) if isinstance(time, float)]
    return [*rows, [max(times) + 1 if times else 0, ""]]


def remove_timeline_row(rows: Any) -> list[list[Any]]:
    """The rows without the last one (one blank row when none is left)."""
    rows = [list(row) for row in _rows(rows) if row]
    return rows[:-1] or [[None, ""]]


def _cell_seconds(cell: Any) -> float | str | None:
    """A time cell: None when empty, a float, or the text that is not a number (for the message)."""
    if cell is None or isinstance(cell, bool):
        return None
    if isinstance(cell, int | float):
        return None if math.isnan(cell) else float(cell)
    text = str(cell).strip()
    if not text:
        return None
    try:
        return float(text.removesuffix("s").strip())
    except ValueError:
        return text


def _rows(rows: Any) -> list[list[Any] | tuple[Any, ...]]:
    """The timeline's rows as sent: a list of rows (lists), or Gradio's `{"data": rows}`; None:
    no rows. Anything else is refused in one line."""
    if isinstance(rows, dict) and "data" in rows:
        rows = rows["data"]
    if rows is None:
        return []
    if not isinstance(rows, list) or not all(isinstance(row, list | tuple) for row in rows):
        raise UserError(f"--prompts: malformed timeline {_shown(rows)}; send rows of [seconds, prompt]")
    return rows


def _text_value(value: Any, flag: str) -> str | None:
    """A text field's value (None when empty); not text: one line."""
    if value is None or isinstance(value, str):
        return value or None
    raise UserError(f"{flag} must be text, got {_shown(value)}")


def _path(value: Any, flag: str) -> str | None:
    """An image field's value: a file path, or None when empty; not a path: one line."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise UserError(f"{flag} must be the path of an uploaded image, got {_shown(value)}")
    return value


def _choice(value: Any, flag: str) -> str | None:
    """A dropdown's value: None for the model's default; not text: one line (the options'
    `validate` names the allowed values)."""
    value = _text_value(value, flag)
    return None if value in (None, MODEL_DEFAULT) else value


def _shown(value: Any) -> str:
    """A value for a message: its type and at most 40 characters of it."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _seconds_text(time: float) -> str:
    """Seconds as the timeline syntax writes them (no exponent: 1e-05 -> '0.00001')."""
    return np.format_float_positional(time, trim="-")


def check_upload(path: str | None, name: str) -> str | None:
    """Check an uploaded image of the control `name` as the queue will (type, size, dimensions);
    returns `path`, or raises UserError with the CLI's one line."""
    if name not in UPLOAD_FLAGS:
        raise UserError(
            f"malformed request: {name!r} is not an image of the form ({', '.join(UPLOAD_FLAGS)})"
        )
    path = _path(path, UPLOAD_FLAGS[name])
    if path:
        check_image_file(path, UPLOAD_FLAGS[name])
    return path


def _keyframes(form: dict[str, Any]) -> list[tuple[float, str]]:
    keyframes = []
    for i in range(KEYFRAME_SLOTS):
        time = form.get(f"keyframe{i}_time")
        image = _path(form.get(f"keyframe{i}_image"), f"--keyframe (keyframe {i + 1})")
        time = None if isinstance(time, str) and not time.strip() else time
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
    """A number field's value; empty (None, "" or blanks): `default`."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UserError(f"{flag} must be a number, got {_shown(value)}")
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
    the model's example image is an empty start image, as in the form. Settings that are not
    a mapping, or whose keyframes are not `[seconds, path]` pairs, are refused in one line.
    """
    if not isinstance(settings, dict):
        raise UserError(f"malformed settings: expected a mapping, got {_shown(settings)}")
    settings = {**settings, "keyframes": _settings_keyframes(settings.get("keyframes"))}
    form: dict[str, Any] = {name: None for name in FORM}
    notes = [
        f"{label} {Path(path).name} is outside the outputs folder; upload it again"
        for label, path in [
            ("the start image", settings.get("image")),
            ("the end image", settings.get("end_image")),
            *(("a keyframe image", p) for _, p in settings.get("keyframes") or []),
        ]
        if isinstance(path, str) and path and path != example_image and _inside(path, outputs) is None
    ]
    keyframes = [(t, _inside(p, outputs)) for t, p in settings.get("keyframes") or []]
    for i in range(KEYFRAME_SLOTS):
        time, image = keyframes[i] if i < len(keyframes) else (None, None)
        form[f"keyframe{i}_time"], form[f"keyframe{i}_image"] = _text(time), image
    form.update(
        image=_inside(settings.get("image"), outputs),
        no_image=settings.get("image") is None,
        end_image=_inside(settings.get("end_image"), outputs),
        prompts=rows_from_timeline(_text_or_none(settings.get("prompts") or settings.get("prompt"))),
        negative_prompt=settings.get("negative_prompt") or "",
        seconds=settings.get("seconds"),
        plan=settings.get("plan") if settings.get("plan") in PLANS else MODEL_DEFAULT,
        seed=settings.get("seed"),
        random_seed=False,
        steps=_text(settings.get("steps")),
        sampler=settings.get("sampler") or MODEL_DEFAULT,
        **{name: _text(settings.get(name)) for name in ("fps", "shift", "guidance", "cfg", "cfg_rescale")},
        crf=None,
        extend=_name_inside(settings.get("extend"), outputs),
    )
    return form, notes


def _text(value: Any) -> str:
    """A setting as a text field shows it: "" for None (the model's default), numbers as %g."""
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _settings_keyframes(keyframes: Any) -> list[tuple[Any, str]]:
    """A sidecar's keyframes, `[[seconds, path], ...]`, checked (UserError, one line)."""
    pairs = keyframes or []
    if not isinstance(pairs, list) or not all(
        isinstance(k, list | tuple) and len(k) == 2 and isinstance(k[1], str) for k in pairs
    ):
        raise UserError(
            f"malformed settings: keyframes must be [seconds, path] pairs, got {_shown(keyframes)}"
        )
    return [(t, p) for t, p in pairs]


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _inside(path: str | None, outputs: Path) -> str | None:
    if not path or not isinstance(path, str):
        return None
    resolved = Path(path).resolve()
    return str(resolved) if resolved.is_relative_to(outputs.resolve()) and resolved.is_file() else None


def _name_inside(path: str | None, outputs: Path) -> str | None:
    inside = _inside(path, outputs)
    return None if inside is None else str(Path(inside).relative_to(outputs.resolve()))
