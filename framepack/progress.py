"""Progress bars for long jobs: one bar over sections, one over the steps of the current section.

Both show rates and ETA (tqdm). Disabled bars cost nothing, so library code can always call them.
"""

from __future__ import annotations

from typing import Any  # tqdm bars


class Progress:
    """Two tqdm bars: sections (with ETA for the job) and steps of the current section."""

    def __init__(self, sections: int, steps: int, *, enabled: bool = True, initial: int = 0) -> None:
        from tqdm.auto import tqdm

        self.enabled = enabled
        self.steps = steps
        self._tqdm = tqdm
        self.sections = tqdm(
            total=sections, initial=initial, desc="sections", unit="section", disable=not enabled, position=0
        )
        self.current: Any = None

    def start_section(self, label: str) -> None:
        """Open the step bar of a section; `label` says which, e.g. "section 2 of 8 (0.27-0.53 s)"."""
        self.current = self._tqdm(
            total=self.steps,
            desc=f"  {label}",
            unit="step",
            leave=False,
            disable=not self.enabled,
            position=1,
        )

    def step(self) -> None:
        if self.current is not None:
            self.current.update(1)

    def end_section(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
        self.sections.update(1)

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
        self.sections.close()
