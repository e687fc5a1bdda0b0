"""The page's uploads and what no job needs: removed when the server starts and while it runs.

Gradio keeps every uploaded image, and its file cache (a copy of each file it hands to the
browser), in `<outputs>/queue/gradio` (`upload_folder`). A job never uses those files: it copies
its images to `<outputs>/queue/inputs/<id>-<role>.<ext>` when it is queued (`JobQueue.add`). So
an upload is only needed while a form still holds it: `clean_uploads` removes every file of the
upload folder that no job file names and that nobody used (uploaded, cached, or queued from the
form: `touch_uploads`) for `keep` seconds, and every input copy whose job file is gone (a queue
add killed between the copy and the job file). The copies of a job that still has its file
(queued, running, stopped, done, failed or cancelled: retry and "load these settings" use them)
are kept. `framepack ui` cleans with `keep=0` when it starts (no page holds an upload yet) and
every `SWEEP_EVERY` seconds while it runs (`UploadSweeper`, from the page's refresh).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from framepack.queue import JobQueue

logger = logging.getLogger(__name__)
UPLOAD_KEEP = 24 * 3600.0  # seconds an upload no job names stays after its last use (a day)
INPUT_GRACE = 600.0  # an input copy without its job file is left this long (an add in progress)
SWEEP_EVERY = 60.0  # seconds between two sweeps while the server runs
_INPUT = re.compile(r"(?P<id>.+)-(?:image|end|keyframe\d+)\.[^./]+")


def upload_folder(outputs: str | os.PathLike) -> Path:
    """Where Gradio keeps the page's uploads and its file cache: `<outputs>/queue/gradio`."""
    return Path(outputs).resolve() / "queue" / "gradio"


def clean_uploads(queue: JobQueue, *, keep: float = UPLOAD_KEEP, now: float | None = None) -> list[Path]:
    """Remove the uploads no job names and nobody used for `keep` seconds, and the input copies
    whose job file is gone (left `INPUT_GRACE` seconds); returns the removed files.

    Ages are read from each file's ctime (when it landed or was last touched, as Gradio's own
    cache ages them). Files a job file names, valid or broken, are never removed.
    """
    now = time.time() if now is None else now
    named = _named_paths(queue)
    removed = []
    folder = upload_folder(queue.outputs)
    for path in _files(folder):
        if str(path) not in named and _age(path, now) >= keep and _remove(path):
            removed.append(path)
    _remove_empty_folders(folder)
    for path in _files(queue.inputs, recursive=False):
        match = _INPUT.fullmatch(path.name)
        if match is None or str(path) in named or queue.path(match["id"]).exists():
            continue
        if _age(path, now) >= INPUT_GRACE and _remove(path):
            removed.append(path)
    return removed


def touch_uploads(paths: Iterable[Any], outputs: str | os.PathLike) -> None:
    """Mark the uploads a form just used as in use (their age starts again); other values
    (None, paths outside the upload folder, files gone) are ignored."""
    folder = upload_folder(outputs)
    for value in paths:
        if isinstance(value, str) and value:
            path = Path(value).resolve()
            if path.is_relative_to(folder):
                with contextlib.suppress(OSError):
                    os.utime(path)


class UploadSweeper:
    """`clean_uploads` at most once every `every` seconds, from any thread (the page's refresh
    calls `maybe` once a second per open page)."""

    def __init__(self, queue: JobQueue, *, every: float = SWEEP_EVERY, keep: float = UPLOAD_KEEP) -> None:
        self.queue, self.every, self.keep = queue, every, keep
        self._lock = threading.Lock()
        self._last = time.monotonic()  # the server cleaned when it started

    def maybe(self) -> list[Path]:
        """Sweep if the last sweep is `every` seconds old (and no other thread sweeps now)."""
        if time.monotonic() - self._last < self.every or not self._lock.acquire(blocking=False):
            return []
        try:
            self._last = time.monotonic()
            removed = clean_uploads(self.queue, keep=self.keep)
            if removed:
                logger.info("removed %d upload(s) no job uses", len(removed))
            return removed
        finally:
            self._lock.release()


def _named_paths(queue: JobQueue) -> set[str]:
    """Every string of every job file that parses as JSON (the paths its options name)."""
    named: set[str] = set()
    for path in _files(queue.folder, recursive=False):
        if path.suffix != ".json":
            continue
        with contextlib.suppress(OSError, ValueError):
            named.update(_strings(json.loads(path.read_bytes().decode("utf-8"))))
    return {str(Path(s).resolve()) for s in named if s.startswith("/")} | named


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _files(folder: Path, *, recursive: bool = True) -> list[Path]:
    if not folder.is_dir():
        return []
    found = folder.rglob("*") if recursive else folder.iterdir()
    files = (p.resolve() for p in found if p.is_file() and not p.is_symlink())
    return sorted(p for p in files if p.is_relative_to(folder.resolve()))


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_ctime
    except OSError:
        return 0.0


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except OSError as err:
        logger.warning("could not remove %s (%s)", path, err.strerror or err)
        return False
    return True


def _remove_empty_folders(folder: Path) -> None:
    """Remove the folders left empty under `folder` (Gradio keeps one per file), not `folder`."""
    if not folder.is_dir():
        return
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            sub.rmdir()  # only succeeds when empty
