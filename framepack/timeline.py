"""Prompt timelines: `"0s: a man walks; 4s: he turns and waves"`.

A timeline is a list of `(start_seconds, prompt)` entries sorted by time. The prompt active at
time t is the last entry starting at or before t (the first entry also covers any time before
it). Syntax errors name the entry and what was expected.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

_ENTRY = re.compile(r"^\s*(?P<time>[0-9]*\.?[0-9]+)\s*s\s*:\s*(?P<text>.*?)\s*$", re.DOTALL)


@dataclass(frozen=True)
class PromptTimeline:
    """Prompts with start times in seconds, sorted, the first at or after 0."""

    entries: tuple[tuple[float, str], ...]

    def __post_init__(self) -> None:
        if not self.entries:
            raise ValueError("prompt timeline is empty; give at least one '<seconds>s: <prompt>' entry")
        times = [t for t, _ in self.entries]
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError(f"prompt timeline times must increase strictly, got {times}")

    @classmethod
    def single(cls, prompt: str) -> PromptTimeline:
        return cls(((0.0, prompt),))

    @property
    def prompts(self) -> list[str]:
        return [p for _, p in self.entries]

    def index_at(self, seconds: float) -> int:
        """Index of the entry active at `seconds`."""
        index = 0
        for i, (start, _) in enumerate(self.entries):
            if start <= seconds + 1e-9:
                index = i
        return index

    def prompt_at(self, seconds: float) -> str:
        return self.entries[self.index_at(seconds)][1]

    def format(self) -> str:
        return "; ".join(f"{_fmt(t)}s: {p}" for t, p in self.entries)


def _fmt(t: float) -> str:
    return f"{t:g}"


def parse_timeline(text: str) -> PromptTimeline:
    """Parse `"0s: text; 4s: text"` (entries separated by ';' or new lines).

    Raises ValueError naming the entry (1-based) and what is wrong.
    """
    parts = [p for p in re.split(r"[;\n]", text) if p.strip()]
    if not parts:
        raise ValueError("prompt timeline is empty; expected e.g. '0s: a man walks; 4s: he waves'")
    entries: list[tuple[float, str]] = []
    for number, part in enumerate(parts, start=1):
        match = _ENTRY.match(part)
        if match is None:
            raise ValueError(
                f"prompt timeline entry {number} ({part.strip()!r}): expected '<seconds>s: <prompt>', "
                "e.g. '4s: he turns and waves'"
            )
        time = float(match["time"])
        if entries and time <= entries[-1][0]:
            raise ValueError(
                f"prompt timeline entry {number} ({part.strip()!r}): time {time:g}s is not after "
                f"the previous entry's {entries[-1][0]:g}s; list entries in increasing time"
            )
        if not match["text"]:
            raise ValueError(f"prompt timeline entry {number} ({part.strip()!r}): the prompt text is empty")
        entries.append((time, match["text"]))
    return PromptTimeline(tuple(entries))
