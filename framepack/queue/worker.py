"""The queue's worker: runs jobs one at a time through `FramePackPipeline.generate`.

One worker per queue by default (the web UI's, `framepack queue run`); with a device
(`framepack queue run --device cuda:1`) one worker per device, several on one queue, each job
claimed by exactly one of them (`JobQueue.claim`) and run on that worker's device.

Nothing here re-implements generation. A job runs with `out=<outputs>/<id>.mp4`; if the job was
interrupted before (its resume data exists), it runs with `resume=True` and continues from the
last saved section, with the same result as an uninterrupted run. The step callback writes the
job's progress (throttled) and a preview of the newest estimate, and reads the job file for a
stop request, so a stop or cancel from any process (the page, `framepack queue cancel`) ends the
job after the current step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from framepack.components import LoadOptions
from framepack.errors import UserError
from framepack.options import GenerationOptions
from framepack.preview import decode_preview
from framepack.queue.store import Claim, JobQueue, QueueJob, worker_lock, worker_pid
from framepack.resume import StopFlag, resume_path
from framepack.video import atomic_path, sidecar_path

logger = logging.getLogger(__name__)

PROGRESS_EVERY = 0.5  # seconds between progress writes to the job file
StepHook = Callable[[QueueJob, Any, int], None]  # (job, section, step): tests simulate crashes here


class Pipelines:
    """Keeps the last loaded pipeline, so a queue of jobs on one model loads it once."""

    def __init__(self, loader: Callable[[str, LoadOptions], Any] | None = None) -> None:
        self.loader = loader
        self._key: str | None = None
        self._pipe: Any = None

    def get(self, model: str, load: dict[str, Any]) -> Any:
        """The pipeline for `model` with `LoadOptions(**load)`, loading it if it is not the last one."""
        key = f"{model}|{sorted(load.items())}"
        if key != self._key:
            self._pipe = None  # free the previous model first
            options = LoadOptions(**load)
            if self.loader is None:
                from framepack.pipeline import FramePackPipeline

                self._pipe = FramePackPipeline.from_pretrained(model, options)
            else:
                self._pipe = self.loader(model, options)
            self._key = key
        return self._pipe

    def put(self, model: str, load: dict[str, Any], pipe: Any) -> None:
        """Seed the cache with an already loaded pipeline."""
        self._key, self._pipe = f"{model}|{sorted(load.items())}", pipe


class Worker:
    """Runs the jobs of a `JobQueue` one at a time (see `worker_lock`: the queue's one worker, or
    with `device` one of several, one per device, each running its jobs on its device).

    `shutdown.set()` (from any thread) ends the running job after its current step and leaves
    it waiting, first, to resume; `wake()` makes an idle worker look at the queue now rather
    than at its next poll; `on_step(job, section, step)`, `on_start(job)` and `on_end(job)`
    observe; `progress` shows each job's progress on stderr (bars on a terminal, else lines).
    """

    def __init__(
        self,
        queue: JobQueue,
        *,
        pipelines: Pipelines | None = None,
        on_step: StepHook | None = None,
        on_end: Callable[[QueueJob], None] | None = None,
        on_start: Callable[[QueueJob], None] | None = None,
        poll: float = 1.0,
        device: str | None = None,
        progress: bool = False,
    ) -> None:
        self.queue = queue
        self.device = device  # None: each job's own --device
        self.name = f"pid {os.getpid()}" + (f" on {device}" if device else "")
        self.pipelines = pipelines or Pipelines()
        self.on_step = on_step
        self.on_end = on_end
        self.on_start = on_start
        self.progress = progress  # the pipeline's progress on stderr (framepack.progress)
        self.poll = poll
        self._wake = threading.Event()
        self.shutdown = _WakingEvent(self._wake)
        self.state = "starting"  # a line for the page: idle, running <id>, waiting for pid N

    def wake(self) -> None:
        """Look for a job now (after `queue.add`): an idle worker starts it at once; a busy one
        finishes its job first (one job at a time), then takes the queue's first."""
        self._wake.set()

    def _idle(self, seconds: float) -> None:
        """Wait until woken, shut down, or `seconds` pass."""
        self._wake.wait(seconds)
        self._wake.clear()

    def run(self, *, until_empty: bool = False) -> int:
        """Run jobs until `shutdown` is set (or, with `until_empty`, none is waiting).

        Returns the number of jobs run. If another process is the queue's worker, raises
        UserError with `until_empty`, else waits for it to go away.
        """
        count = 0
        while not self.shutdown.is_set():
            with worker_lock(self.queue, self.device) as lock:
                if lock is None:
                    pid = worker_pid(self.queue)
                    if until_empty:
                        raise UserError(
                            f"another worker (pid {pid}) is running the queue in {self.queue.outputs}; "
                            "its jobs run there"
                        )
                    self.state = f"waiting: another worker (pid {pid}) runs this queue"
                    self._idle(self.poll * 2)
                    continue
                if self.device is None:  # the one worker: no other writes can be under way
                    self.queue.remove_litter()
                while not self.shutdown.is_set():
                    claim = self.queue.claim(worker=self.name)
                    if claim is None:
                        if until_empty:
                            return count
                        self.state = "idle"
                        self._idle(self.poll)
                        continue
                    with claim:
                        ended = self._run_claimed(claim.job)
                    count += 1
                    if self.on_end is not None:
                        self.on_end(ended)
        return count

    def run_job(self, job: QueueJob) -> QueueJob:
        """Run one job to its end (done, stopped, cancelled or failed); returns its final record.

        Raises UserError if another live worker is running it.
        """
        claim: Claim | None = self.queue.claim(job.id, worker=self.name)
        if claim is None:
            raise UserError(f"job {job.id} is being run by another worker ({self.queue.get(job.id).worker})")
        with claim:
            return self._run_claimed(claim.job)

    def _run_claimed(self, job: QueueJob) -> QueueJob:
        """Run a job this worker has claimed (marked running) to its end."""
        self.state = f"running {job.id}"
        if self.on_start is not None:
            self.on_start(job)
        queue, video = self.queue, self.queue.video(job)
        if finished(video):  # killed after the video was complete, before the job was marked
            return queue.update(job.id, lambda j: _finish(j, "done", frames=_frames(video)))
        flag = StopFlag(on_signal=None)
        try:
            load = job.load if self.device is None else {**job.load, "device": self.device}
            pipe = self.pipelines.get(job.model, load)
            options = job.generation_options(video)
            resume = resume_path(video).exists()
            options = dataclasses.replace(options, resume=resume, overwrite=not resume)
            callback = self._callback(job, pipe, options, flag)
            result = pipe.generate(options, progress=self.progress, callback=callback, stop=flag)
        except UserError as err:
            message = str(err)
        except Exception as err:
            logger.exception("job %s failed", job.id)
            message = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
        else:
            message = None
        finally:
            _remove_folder(queue.preview_folder(job))
        if message is not None:
            return queue.update(job.id, lambda j: _finish(j, "failed", error=message))
        if not result.stopped:
            digest = hashlib.sha256(result.latents.float().contiguous().numpy().tobytes()).hexdigest()
            return queue.update(job.id, lambda j: _finish(j, "done", frames=result.frames, digest=digest))
        if self.shutdown.is_set():  # the worker is going away: the job waits, first, to resume
            return queue.update(job.id, lambda j: _finish(j, "queued" if j.status == "running" else j.status))
        return queue.update(job.id, lambda j: _finish(j, "stopped" if j.status == "running" else j.status))

    def _callback(
        self, job: QueueJob, pipe: Any, options: GenerationOptions, flag: StopFlag
    ) -> Callable[[Any], None]:
        """The step callback: progress, previews, and stop requests (from the file or shutdown)."""
        last = {"progress": 0.0, "preview": 0.0, "preview_cost": 0.0}

        def callback(info: Any) -> None:  # framepack.pipeline.StepInfo
            section, step, steps, x0 = info.section, info.step, info.steps, info.x0
            if self.on_step is not None:
                self.on_step(job, section, step)
            if self.shutdown.is_set():
                flag.request()
            now = time.monotonic()
            if now - last["preview"] >= max(1.0, 4 * last["preview_cost"]) or step == steps - 1:
                write_preview(pipe, x0, self.queue.preview_folder(job) / "latest.png")
                last["preview"], last["preview_cost"] = now, time.monotonic() - now
            if now - last["progress"] < PROGRESS_EVERY and step != steps - 1:
                return
            last["progress"] = now
            total = info.sections
            progress = {
                "section": section.step + 1,
                "sections": total,
                "step": step + 1,
                "steps": steps,
                "fraction": min(1.0, (section.step + (step + 1) / steps) / total),
            }
            record = self.queue.update(job.id, lambda j: setattr(j, "progress", progress))
            if record.stop_requested or record.status != "running":
                flag.request()

        return callback


class _WakingEvent(threading.Event):
    """The worker's shutdown event: setting it also wakes the worker's idle wait."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake_too = wake

    def set(self) -> None:
        super().set()
        self._wake_too.set()


def write_preview(pipe: Any, x0: Tensor, path: Path) -> None:
    """The section's current estimate `x0` (1, C, n, h, w), decoded (`decode_preview`), as a PNG
    written atomically (the page may read it at any moment)."""
    from PIL import Image

    strip = decode_preview(pipe.components.codec, x0, device=pipe.components.device)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(strip).save(tmp, format="PNG")


def finished(video: Path) -> bool:
    """Whether `video` is a complete job's output (its sidecar says so and no resume data is left)."""
    if not video.is_file() or resume_path(video).exists():
        return False
    try:
        return bool(json.loads(sidecar_path(video).read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def _finish(
    job: QueueJob,
    status: str,
    *,
    error: str | None = None,
    frames: int | None = None,
    digest: str | None = None,
) -> None:
    job.status, job.error, job.stop_requested = status, error, False
    if frames is not None:
        job.frames, job.latents_sha256 = frames, digest
    if status == "done":
        job.progress = {**job.progress, "fraction": 1.0}


def _frames(video: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(json.loads(sidecar_path(video).read_text())["frames"])
    return None


def _remove_folder(folder: Path) -> None:
    if folder.is_dir():
        for path in folder.iterdir():
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()
