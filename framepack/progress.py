"""Progress of long jobs: on a terminal, two tqdm bars (sections with the job's ETA, and the
steps of the current section); elsewhere (a log file, a pipe) one line per finished section.

Disabled progress costs nothing, so library code can always call it.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO  # tqdm bars


class Progress:
    """Sections and steps of one job, as bars on a terminal or as a line per section."""

    def __init__(
        self,
        sections: int,
        steps: int,
        *,
        enabled: bool = True,
        initial: int = 0,
        stream: TextIO | None = None,
    ) -> None:
        from tqdm.auto import tqdm

        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.lines = enabled and not _is_terminal(self.stream)  # a log: lines, not bars
        self.steps = steps
        self.total, self.done = sections, initial
        self._tqdm = tqdm
        self._label, self._started = "", time.perf_counter()
        self.sections = tqdm(
            total=sections,
            initial=initial,
            desc="sections",
            unit="section",
            disable=not enabled or self.lines,
            position=0,
            file=self.stream,
        )
        self.current: Any = None

    def start_section(self, label: str) -> None:
        """Open the step bar of a section; `label` says which, e.g. "section 2 of 8 (0.27-0.53 s)"."""
        self._label, self._started = label, time.perf_counter()
        self.current = self._tqdm(
            total=self.steps,
            desc=f"  {label}",
            unit="step",
            leave=False,
            disable=not self.enabled or self.lines,
            position=1,
            file=self.stream,
        )

    def step(self) -> None:
        if self.current is not None:
            self.current.update(1)

    def end_section(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
        self.sections.update(1)
        self.done += 1
        if self.lines:
            seconds = time.perf_counter() - self._started
            print(
                f"{self._label}: done in {seconds:.1f} s ({self.done}/{self.total} sections)",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
        self.sections.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
