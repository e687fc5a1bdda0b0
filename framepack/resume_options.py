"""The options of a job being resumed, taken from its resume state.

A stopped job's resume state (framepack.resume) holds the settings it was made with (prompts,
images, seconds, seed, steps...), so `framepack generate --resume --out a.mp4` alone finishes
it: every setting comes from the state. An option the user gave that contradicts the state is
refused in one line naming it; one that agrees is accepted.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from framepack.errors import UserError
from framepack.options import GenerationOptions
from framepack.timeline import parse_timeline

# Options recorded in a job's settings under the same name (framepack.pipeline.Job._settings).
RECORDED = (
    "negative_prompt",
    "image",
    "end_image",
    "keyframes",
    "extend",
    "seconds",
    "fps",
    "seed",
    "steps",
    "plan",
    "sampler",
    "shift",
    "guidance",
    "cfg",
    "cfg_rescale",
    "history_noise",
    "history_cfg",
    "ranking",
)
# Research options are recorded only when used: absent means the default.
UNRECORDED_DEFAULTS = {"history_noise": 0.0, "history_cfg": 1.0, "ranking": None}
FLAGS = {"keyframes": "--keyframe", "no_image": "--no-image"}


def given_fields(options: GenerationOptions, overrides: Collection[str] = ()) -> set[str]:
    """The fields a caller set: those that differ from `GenerationOptions()`'s, and `overrides`."""
    default = GenerationOptions()
    changed = {
        f.name for f in dataclasses.fields(options) if getattr(options, f.name) != getattr(default, f.name)
    }
    return changed | set(overrides)


def resumed_options(
    options: GenerationOptions, settings: Mapping[str, Any], given: Collection[str], video: str | os.PathLike
) -> GenerationOptions:
    """`options` with every job setting taken from the resume state's `settings`.

    given: the option fields the user set (CLI flags typed, API arguments); each is checked
    against the state and a contradiction raises UserError naming its flag. Options that are no
    job setting (out, crf, preview...) are kept as given.
    """
    saved = saved_options(settings)
    for name in sorted(set(given) & {*RECORDED, "prompt", "prompts", "no_image"}):
        value = getattr(options, name)
        recorded = _recorded(name, settings, saved)
        if not _agrees(name, value, recorded):
            flag = FLAGS.get(name, "--" + name.replace("_", "-"))
            typed = flag if name == "no_image" else f"{flag} {_show(value)}"
            was = {"no_image": "--image", "prompt": "--prompts"}.get(name, flag)
            raise UserError(
                f"{typed} contradicts the job being resumed ({video} was made with {was} "
                f"{_show(recorded)}); drop {flag} to resume it, or start over without --resume"
            )
    return dataclasses.replace(options, **saved)


def saved_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The `GenerationOptions` fields of a job's recorded settings."""
    saved: dict[str, Any] = {name: settings.get(name, UNRECORDED_DEFAULTS.get(name)) for name in RECORDED}
    saved["keyframes"] = [(float(t), str(p)) for t, p in settings.get("keyframes") or []]
    saved["no_image"] = settings.get("image") is None and settings.get("extend") is None
    text = str(settings.get("prompts") or "")
    saved["prompt"], saved["prompts"] = (None, text) if _round_trips(text) else (_single(text), None)
    return saved


def _round_trips(text: str) -> bool:
    try:
        return parse_timeline(text).format() == text
    except ValueError:
        return False


def _single(text: str) -> str:
    """The prompt of a one-entry timeline "0s: <prompt>" whose prompt holds a ';'."""
    return text.removeprefix("0s:").strip()


def _recorded(name: str, settings: Mapping[str, Any], saved: dict[str, Any]) -> Any:
    if name in ("prompt", "prompts"):
        return settings.get("prompts")
    if name == "no_image":
        return settings.get("image")
    return saved[name]


def _agrees(name: str, value: Any, recorded: Any) -> bool:
    """Whether a given option says what the state recorded."""
    if name in ("prompt", "prompts"):
        timeline = GenerationOptions(**{name: value}).timeline()
        return recorded in (timeline.format(), f"0s: {value}")
    if name == "no_image":
        return not value or recorded is None
    if name in ("image", "end_image", "extend"):
        return _same_path(value, recorded)
    if name == "keyframes":
        recorded = [(float(t), str(p)) for t, p in recorded or []]
        return len(value) == len(recorded) and all(
            math.isclose(t, u) and _same_path(p, q) for (t, p), (u, q) in zip(value, recorded)
        )
    if isinstance(value, int | float) and isinstance(recorded, int | float):
        return math.isclose(value, recorded, rel_tol=1e-9, abs_tol=1e-12)
    return value == recorded


def _same_path(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a == b
    return a == b or Path(a).resolve() == Path(b).resolve()


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(f"{t:g}s={p}" for t, p in value) or "no keyframes"
    text = "nothing" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
