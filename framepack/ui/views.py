"""What the page shows, computed from the queue and the outputs folder (no web framework here).

The page polls these once a second: the queue as table rows, the running job as two progress
bars, the finished videos of the gallery with their sidecar settings.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from framepack.queue import JobQueue, QueueJob
from framepack.queue.store import worker_pid
from framepack.video import sidecar_path

QUEUE_HEADERS = ["job", "status", "progress", "seconds", "seed", "prompt", "note"]


def queue_rows(queue: JobQueue) -> list[list[Any]]:
    """One row per job, in queue order."""
    rows = []
    for job in queue.jobs():
        fraction = job.progress.get("fraction")
        progress = f"{100 * fraction:.0f}%" if fraction is not None else ""
        note = job.error or ("stopping..." if job.stop_requested else "")
        if job.status == "done":
            note = queue.video(job).name
        rows.append(
            [job.id, job.status, progress, job.options["seconds"], job.options["seed"], _prompt(job), note]
        )
    return rows


def job_choices(queue: JobQueue) -> list[tuple[str, str]]:
    """(label, id) of every job, for the job picker."""
    return [(f"{j.id} · {j.status} · {_prompt(j)[:40]}", j.id) for j in queue.jobs()]


def queued_message(queue: JobQueue, job: QueueJob, *, now: bool, worker_state: str) -> str:
    """What the page says after queueing `job` ("add to queue", or "generate now" with `now`).

    One job runs at a time: "generate now" puts the job first and wakes the worker, so it starts
    at once when no job runs, and otherwise right after the running one (which is not stopped).
    """
    seed = job.options["seed"]
    if not now:
        waiting = [j.id for j in queue.jobs() if j.status in ("running", "queued")]
        place = waiting.index(job.id) + 1 if job.id in waiting else len(waiting)
        return f"Queued **{job.id}** (number {place} in the queue), seed {seed}."
    running = queue.running()
    if running is not None and running.id != job.id:
        return (
            f"**{job.id}** is first in the queue, seed {seed}: it starts when **{running.id}** "
            "(running) ends; one job runs at a time, so stop that one to start this sooner."
        )
    if worker_state.startswith("waiting"):
        return (
            f"**{job.id}** is first in the queue, seed {seed}: another process (pid {worker_pid(queue)}) "
            "runs this queue and starts it next."
        )
    return f"**{job.id}** starts now, seed {seed}."


def progress_html(job: QueueJob | None, worker_state: str) -> str:
    """The running job's bars (the job, its current section) and the worker's state."""
    if job is None:
        return f'<div id="fp-progress"><p>No job is running ({html.escape(worker_state)}).</p></div>'
    p = job.progress
    section, sections = p.get("section", 0), p.get("sections", 0)
    step, steps = p.get("step", 0), p.get("steps", 0)
    job_bar = _bar(p.get("fraction", 0.0), "job")
    section_bar = _bar(step / steps if steps else 0.0, "section")
    stopping = " · stopping after this step" if job.stop_requested else ""
    return (
        '<div id="fp-progress">'
        f"<p><b>{html.escape(job.id)}</b>: {html.escape(_prompt(job))}{stopping}</p>"
        f"<p>job {100 * p.get('fraction', 0.0):.0f}% {job_bar}</p>"
        f"<p>section {section} of {sections}, step {step} of {steps} {section_bar}</p>"
        "</div>"
    )


def _bar(fraction: float, name: str) -> str:
    return f'<progress class="fp-{name}" max="1" value="{min(max(fraction, 0.0), 1.0):.3f}"></progress>'


def _prompt(job: QueueJob) -> str:
    return job.prompt.replace("\n", "; ") or "(the model's prompt)"


def latest_video(queue: JobQueue) -> Path | None:
    """The video "the video so far" shows when no job runs: the newest one a job made (by the
    file's time: a "generate now" job runs before older queued ones), or None."""
    videos = [queue.video(j) for j in queue.jobs() if j.status in ("done", "stopped")]
    videos = [v for v in videos if v.is_file()]
    return max(videos, key=lambda v: v.stat().st_mtime_ns, default=None)


def finished_videos(outputs: Path) -> list[Path]:
    """Complete videos in `outputs` (their sidecar says `complete`), newest first."""
    videos = []
    for path in outputs.glob("*.mp4"):
        if path.name.startswith("."):
            continue
        settings = read_settings(path)
        if settings.get("complete"):
            videos.append(path)
    return sorted(videos, key=lambda p: p.stat().st_mtime, reverse=True)


def read_settings(video: Path) -> dict[str, Any]:
    """A video's sidecar settings, or {} when it has none (or an unreadable one)."""
    try:
        data = json.loads(sidecar_path(video).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def video_choices(outputs: Path) -> list[tuple[str, str]]:
    """(label, file name) of the gallery's videos: name, prompts, length and seed."""
    choices = []
    for video in finished_videos(outputs):
        s = read_settings(video)
        prompt = str(s.get("prompts", "")).removeprefix("0s: ")
        label = f"{video.stem} · {prompt[:48]} · {s.get('seconds', '?')}s · seed {s.get('seed', '?')}"
        choices.append((label, video.name))
    return choices
