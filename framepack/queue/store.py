"""The job queue on disk: one JSON file per job, written atomically, in the outputs folder.

Layout of an outputs folder (the web UI, `framepack queue` and the worker all use it):

    <outputs>/<id>.mp4, <id>.json          a job's video and its settings sidecar (the pipeline's)
    <outputs>/queue/<id>.json              the job: status, position, options, progress
    <outputs>/queue/inputs/<id>-*.png      copies of the job's input images (uploads vanish)
    <outputs>/queue/<id>.preview/          the latest preview frame while the job runs
    <outputs>/queue/.lock                  flock held for each read-modify-write of a job file
    <outputs>/queue/<id>.claim             flock held by the worker running the job, while it runs
    <outputs>/queue/worker.lock            flock of the queue's workers (see `worker_lock`)
    <outputs>/queue/worker-<device>.lock   flock of the one worker on a device (`--device cuda:1`)

A job file is replaced whole (temporary file, then `os.replace`), so a reader or a kill -9 never
sees half a file. Jobs run in `position` order. A worker takes a job with `JobQueue.claim`: under
the queue lock it locks the job's claim file and marks the job running, so several workers (one
per GPU) never take the same job. A job found "running" whose claim file nobody holds was
interrupted (the OS drops the lock of a dead process) and is claimed again first, resuming from
its last saved section (`--resume`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from framepack.components import LoadOptions
from framepack.disk import writing
from framepack.errors import UserError
from framepack.options import GenerationOptions, keyframe_label
from framepack.schema import check_types
from framepack.video import atomic_path, remove_litter

FORMAT = "framepack-queue-job"
FORMAT_VERSION = 1
STATUSES = ("queued", "running", "stopped", "done", "failed", "cancelled")
WAITING = ("running", "queued")  # what a worker picks up, interrupted jobs first
MAX_IMAGE_BYTES = 50 * 1024 * 1024
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
# Options the queue chooses itself: a job writes <outputs>/<id>.mp4 and resumes when interrupted.
QUEUE_OWNED = ("out", "overwrite", "resume", "preview")
_JOB_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


@dataclass
class QueueJob:
    """One queued generation job, as stored in `<outputs>/queue/<id>.json`.

    options: `GenerationOptions` fields (JSON values) without the QUEUE_OWNED ones.
    model, load: what to load (`FramePackPipeline.from_pretrained(model, LoadOptions(**load))`).
    progress: while running, {"section", "sections", "step", "steps", "fraction"} (0..1).
    latents_sha256: SHA-256 of the finished job's latent timeline (float32): a resumed job's
        equals an uninterrupted one's (the MP4 bytes need not: x264 with threads varies).
    """

    id: str
    options: dict[str, Any]
    model: str = "demo"
    load: dict[str, Any] = field(default_factory=dict)
    status: str = "queued"
    position: float = 0.0
    created: str = ""
    updated: str = ""
    attempts: int = 0
    error: str | None = None
    stop_requested: bool = False
    progress: dict[str, Any] = field(default_factory=dict)
    frames: int | None = None
    latents_sha256: str | None = None
    worker: str | None = None  # who runs or last ran it: "pid 4242 on cuda:1"

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: Any, name: str | None = None) -> QueueJob:
        """A job from its file's JSON, every field checked (framepack.schema): its types, its
        status, its options (`GenerationOptions` fields and types) and load options, and its id
        (a plain name, equal to the file's name `name` without `.json`). ValueError says what is
        wrong, naming the key."""
        if not isinstance(data, dict):
            raise ValueError(f"a job file must hold a JSON object, got {json.dumps(data)[:40]}")
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} file of version {FORMAT_VERSION} (format, format_version)")
        fields = {k: v for k, v in data.items() if k not in ("format", "format_version")}
        check_types(cls, fields)
        job = cls(**fields)
        check_job_id(job.id)
        if name is not None and job.id != name:
            raise ValueError(f"id {job.id!r} differs from the file's name {name!r}; they must be equal")
        if job.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {job.status!r}")
        if not math.isfinite(job.position):
            raise ValueError(f"position must be a finite number, got {job.position}")
        owned = sorted(set(job.options) & set(QUEUE_OWNED))
        if owned:
            raise ValueError(f"options.{owned[0]} is chosen by the queue itself; remove it")
        check_types(GenerationOptions, job.options, prefix="options.")
        check_types(LoadOptions, job.load, prefix="load.")
        return job

    def generation_options(self, video: Path) -> GenerationOptions:
        """The job's options writing `video` (resume and preview are set by the worker)."""
        data = dict(self.options)
        data["keyframes"] = [(float(t), str(p)) for t, p in data.get("keyframes", [])]
        return GenerationOptions(**data, out=str(video))

    @property
    def prompt(self) -> str:
        """The job's prompt or timeline, for listings."""
        return str(self.options.get("prompts") or self.options.get("prompt") or "")


@dataclass(frozen=True)
class BrokenJob:
    """A job file that is not a valid job: its name in the queue folder and why."""

    file: str
    reason: str


def read_job(path: Path) -> QueueJob:
    """The job in the file `path`; ValueError (one line) for a file that is unreadable, not
    UTF-8 JSON, or not a valid job (`QueueJob.from_json`)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ValueError(f"cannot read it ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise ValueError("it is not UTF-8 text (UTF-16, or binary)") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"not valid JSON ({err}); half-written or edited by hand") from None
    return QueueJob.from_json(data, path.name.removesuffix(".json"))


def check_job_id(job_id: str) -> None:
    """A job id names files in the queue folder: letters, digits, `-`, `_` and `.` (not first),
    at most 100 characters; anything else (`../x`, `a/b`, "") is refused with a ValueError."""
    if not (isinstance(job_id, str) and _JOB_ID.fullmatch(job_id)):
        raise ValueError(
            f"job id {job_id!r} is not a plain name (letters, digits, '-', '_', '.'; at most 100)"
        )


def new_job_id() -> str:
    """A sortable unique id: `YYYYmmdd-HHMMSS-<4 hex>`."""
    return f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def now() -> str:
    return datetime.now().isoformat(timespec="seconds")


class JobQueue:
    """The jobs of one outputs folder. Safe to use from several processes at once."""

    def __init__(self, outputs: str | os.PathLike) -> None:
        self.outputs = Path(outputs).resolve()
        if self.outputs.exists() and not self.outputs.is_dir():
            raise UserError(f"--outputs {outputs} is a file; give the outputs folder")
        self.folder = self.outputs / "queue"
        self.inputs = self.folder / "inputs"
        for folder in (self.folder, self.inputs):
            if folder.exists() and not folder.is_dir():
                raise UserError(
                    f"{folder} is a file where the queue keeps a folder; move it away or give another --outputs"
                )

    # ------------------------------------------------------------------ paths

    def path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.json"

    def video(self, job: QueueJob | str) -> Path:
        """Where a job's video goes: `<outputs>/<id>.mp4`."""
        return self.outputs / f"{job if isinstance(job, str) else job.id}.mp4"

    def preview_folder(self, job: QueueJob | str) -> Path:
        return self.folder / f"{job if isinstance(job, str) else job.id}.preview"

    # ------------------------------------------------------------------ reading

    def jobs(self) -> list[QueueJob]:
        """Every readable job, in queue order (position, then creation); broken files are left
        out (`broken` lists them), never run."""
        return self.scan()[0]

    def broken(self) -> list[BrokenJob]:
        """The job files that cannot be read as a job, each with the reason, by file name."""
        return self.scan()[1]

    def scan(self) -> tuple[list[QueueJob], list[BrokenJob]]:
        """Every job file read: (the jobs in queue order, the broken files by name)."""
        if not self.folder.is_dir():
            return [], []
        jobs, broken = [], []
        for path in sorted(self.folder.glob("*.json")):
            if path.name.startswith("."):  # a temporary file of an atomic write
                continue
            try:
                jobs.append(read_job(path))
            except ValueError as err:
                broken.append(BrokenJob(path.name, str(err)))
        return sorted(jobs, key=lambda j: (j.position, j.created, j.id)), broken

    def get(self, job_id: str) -> QueueJob:
        """The job `job_id` (UserError if there is none, or its file is broken)."""
        try:
            check_job_id(job_id)
        except ValueError:
            raise UserError(
                f"no job {job_id!r} in {self.folder}; `framepack queue list` shows the jobs"
            ) from None
        path = self.path(job_id)
        if not path.is_file():
            raise UserError(f"no job {job_id!r} in {self.folder}; `framepack queue list` shows the jobs")
        try:
            return read_job(path)
        except ValueError as err:
            raise UserError(f"job file {path.name} is broken ({err}); fix or remove it") from None

    def claim_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.claim"

    def running(self) -> QueueJob | None:
        """The job marked running (the worker's current one, or one a kill interrupted)."""
        return next((j for j in self.jobs() if j.status == "running"), None)

    def next_job(self) -> QueueJob | None:
        """The job a worker should run next: an interrupted one, else the first queued (a look
        only; `claim` takes it)."""
        with self.locked():  # claim files are only probed under the queue lock
            jobs = self.jobs()
            for status in WAITING:
                for job in jobs:
                    if job.status == status and not (status == "running" and self._claimed(job.id)):
                        return job
        return None

    def _claimed(self, job_id: str) -> bool:
        """Whether a live worker holds the job's claim file."""
        path = self.claim_path(job_id)
        if not path.exists():
            return False
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False

    # ------------------------------------------------------------------ claiming

    def claim(self, job_id: str | None = None, *, worker: str = "") -> Claim | None:
        """Take a job to run: `job_id`, or the next one (an interrupted job first, then the first
        queued). Marks it running (attempts + 1) by `worker`. Returns None when no job is free:
        none waits, or a live worker holds the one asked for. Hold the returned `Claim` while the
        job runs and release it after its last update (`with claim:`).
        """
        with self.locked():
            if job_id is not None:
                candidates = [self.get(job_id)]
            else:
                jobs = self.jobs()
                candidates = [j for status in WAITING for j in jobs if j.status == status]
            for job in candidates:
                handle = _try_lock(self.claim_path(job.id))
                if handle is None:  # a live worker runs it
                    continue
                job.status, job.attempts, job.error, job.progress = "running", job.attempts + 1, None, {}
                job.worker = worker or None
                self.write(job)
                return Claim(self, job, handle)
        return None

    # ------------------------------------------------------------------ writing

    def write(self, job: QueueJob) -> None:
        """Replace the job's file atomically (temporary file + os.replace)."""
        check_job_id(job.id)  # never a file outside the queue folder
        with writing(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
        job.updated = now()
        text = json.dumps(job.to_json(), indent=2, ensure_ascii=False) + "\n"
        with atomic_path(self.path(job.id)) as tmp, open(tmp, "x", encoding="utf-8") as f:
            f.write(text)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the queue's mutation lock (flock; released by the OS if the process dies)."""
        with writing(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
            f = open(self.folder / ".lock", "a+")  # noqa: SIM115 (closed below)
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def update(self, job_id: str, change: Callable[[QueueJob], None]) -> QueueJob:
        """Read, change and rewrite one job under the lock; returns the new job."""
        with self.locked():
            job = self.get(job_id)
            change(job)
            self.write(job)
            return job

    def add(
        self,
        options: GenerationOptions,
        *,
        model: str = "demo",
        load: LoadOptions | None = None,
        front: bool = False,
    ) -> QueueJob:
        """Validate `options` (UserError, the CLI's messages), copy its images, queue it."""
        for name in QUEUE_OWNED:
            if getattr(options, name) not in (None, False):
                raise UserError(f"--{name}: the queue chooses this itself (<outputs>/<job id>.mp4)")
        options.validate()
        for path, flag in _images(options):
            check_image_file(path, flag)
        job_id = new_job_id()
        while self.path(job_id).exists():
            job_id = new_job_id()
        data = self._keep_inputs(job_id, options).to_json()
        for name in QUEUE_OWNED:
            data.pop(name, None)
        load_data = dataclasses.asdict(load or LoadOptions())
        if load_data.get("model_dir"):
            load_data["model_dir"] = str(Path(load_data["model_dir"]).resolve())
        model = str(Path(model).resolve()) if Path(model).exists() else model
        with self.locked():
            positions = [j.position for j in self.jobs()] or [0.0]
            position = min(positions) - 1 if front else max(positions) + 1
            job = QueueJob(job_id, data, model, load_data, position=position, created=now())
            self.write(job)
        return job

    def _keep_inputs(self, job_id: str, options: GenerationOptions) -> GenerationOptions:
        """Copy input images under queue/inputs (absolute paths), so the job outlives uploads."""
        with writing(self.inputs):
            self.inputs.mkdir(parents=True, exist_ok=True)

        def keep(path: str | None, role: str) -> str | None:
            if path is None:
                return None
            target = self.inputs / f"{job_id}-{role}{Path(path).suffix.lower() or '.png'}"
            with atomic_path(target) as tmp:
                shutil.copyfile(path, tmp)
            return str(target)

        keyframes = [(t, keep(p, f"keyframe{i}") or p) for i, (t, p) in enumerate(options.keyframes)]
        return dataclasses.replace(
            options,
            image=keep(options.image, "image"),
            end_image=keep(options.end_image, "end"),
            keyframes=keyframes,
            extend=str(Path(options.extend).resolve()) if options.extend else None,
        )

    # ------------------------------------------------------------------ changing the order

    def move(self, job_id: str, offset: int) -> QueueJob:
        """Move a waiting job `offset` places (negative: earlier) among the waiting jobs."""
        with self.locked():
            waiting = [j for j in self.jobs() if j.status == "queued"]
            index = next((i for i, j in enumerate(waiting) if j.id == job_id), None)
            if index is None:
                raise UserError(f"job {job_id} is not waiting in the queue; only queued jobs can be moved")
            job = waiting.pop(index)
            waiting.insert(max(0, min(len(waiting), index + offset)), job)
            base = min(j.position for j in waiting)
            for i, other in enumerate(waiting):
                if other.position != base + i:
                    other.position = base + i
                    self.write(other)
            return job

    def cancel(self, job_id: str) -> QueueJob:
        """Cancel a waiting job, or stop a running one after its current step."""

        def change(job: QueueJob) -> None:
            if job.status in ("done", "failed", "cancelled"):
                raise UserError(f"job {job_id} is {job.status}; there is nothing to cancel")
            job.stop_requested = job.status == "running"
            job.status = "cancelled"

        return self.update(job_id, change)

    def stop(self, job_id: str) -> QueueJob:
        """Stop a running job after the current step; it keeps what it made (retry resumes)."""

        def change(job: QueueJob) -> None:
            if job.status != "running":
                raise UserError(f"job {job_id} is {job.status}, not running; only a running job can stop")
            job.stop_requested = True

        return self.update(job_id, change)

    def retry(self, job_id: str) -> QueueJob:
        """Queue a stopped, failed or cancelled job again, at the end; it resumes what it saved."""

        def change(job: QueueJob) -> None:
            if job.status not in ("stopped", "failed", "cancelled"):
                raise UserError(f"job {job_id} is {job.status}; only stopped, failed or cancelled jobs retry")
            job.status, job.error, job.stop_requested = "queued", None, False
            job.position = max(j.position for j in self.jobs()) + 1

        return self.update(job_id, change)

    def remove_litter(self) -> None:
        """Remove temporary files left by a process killed mid-write."""
        for job in self.jobs():
            remove_litter(self.path(job.id))


class Claim:
    """A worker's hold on one job (the job's claim file, locked); `release()` or `with claim:`."""

    def __init__(self, queue: JobQueue, job: QueueJob, handle: IO[str]) -> None:
        self.queue, self.job, self._handle = queue, job, handle

    def release(self) -> None:
        """Let the job go: the claim file is removed under the queue lock (no claim can be
        opening it), then unlocked."""
        if self._handle.closed:
            return
        with self.queue.locked():
            self.queue.claim_path(self.job.id).unlink(missing_ok=True)
            self._handle.close()  # closing drops the flock

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_lock(path: Path) -> IO[str] | None:
    """Open and lock `path` (flock, exclusive, without waiting); None if another holds it."""
    f = open(path, "a+")  # noqa: SIM115 (held open for as long as the lock)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def device_lock_name(device: str) -> str:
    """`worker-<device>.lock` for a device name ("cuda:1" -> "worker-cuda-1.lock")."""
    return "worker-" + "".join(c if c.isalnum() else "-" for c in device) + ".lock"


@contextlib.contextmanager
def worker_lock(queue: JobQueue, device: str | None = None) -> Iterator[IO[str] | None]:
    """Try to become one of the queue's workers: yields a held lock file, or None.

    Without `device`, the queue's one worker (the web UI's, `framepack queue run`): an exclusive
    lock on `worker.lock`, None while any other worker runs. With `device` ("cuda:1"), one of
    several workers, one per device: a shared lock on `worker.lock` (so device workers exclude
    the one-worker kind and not each other) and an exclusive one on the device's lock file, None
    while another worker holds either. The held file carries the pid (and device); the OS drops
    the locks when the worker dies.
    """
    queue.folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        main = stack.enter_context(open(queue.folder / "worker.lock", "a+"))
        try:
            fcntl.flock(main, (fcntl.LOCK_SH if device else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        held = main
        if device:
            held = stack.enter_context(open(queue.folder / device_lock_name(device), "a+"))
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
        held.seek(0)
        held.truncate()
        held.write(f"{os.getpid()}{f' on {device}' if device else ''}\n")
        held.flush()
        try:
            yield held
        finally:
            held.truncate(0)  # no longer a worker; closing the files (ExitStack) drops the locks


def worker_pid(queue: JobQueue) -> str:
    """Who holds the queue, for messages: the live workers' pids as they wrote them ("4242", or
    "4243 on cuda:0, 4244 on cuda:1"); "?" when none is known."""
    paths = [queue.folder / "worker.lock", *sorted(queue.folder.glob("worker-*.lock"))]
    found = []
    for path in paths:
        with contextlib.suppress(OSError):
            text = path.read_text().strip()
            if _alive(text):
                found.append(text)
    return ", ".join(found) or "?"


def _alive(text: str) -> bool:
    """Whether the pid a worker wrote ("4242" or "4242 on cuda:1") is a live process."""
    try:
        os.kill(int(text.split()[0]), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _images(options: GenerationOptions) -> list[tuple[str, str]]:
    pairs = [(options.image, "--image"), (options.end_image, "--end-image")]
    pairs += [(p, keyframe_label(t, p)) for t, p in options.keyframes]
    return [(p, flag) for p, flag in pairs if p is not None]


def check_image_file(path: str | os.PathLike, flag: str) -> None:
    """Refuse an input image before it is queued: its type, file size and dimensions
    (UserError, one line; the same dimension limits as `framepack generate`)."""
    from PIL import Image, UnidentifiedImageError

    from framepack.conditioning import check_image

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag}: no such file: {path}")
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise UserError(f"{flag}: {path.name} is {size / 2**20:.0f} MB; give an image under 50 MB")
    try:
        with Image.open(path) as image:
            kind, (w, h) = image.format, image.size
    except Image.DecompressionBombError:
        raise UserError(f"{flag}: {path.name} claims over 90 megapixels; give a smaller image") from None
    except (UnidentifiedImageError, OSError):
        raise UserError(
            f"{flag}: cannot read {path.name} as an image; give a PNG, JPEG, WebP or BMP file"
        ) from None
    if kind not in IMAGE_FORMATS:
        raise UserError(f"{flag}: {path.name} is a {kind} image; give a PNG, JPEG, WebP or BMP file")
    check_image(np.empty((h, w, 0), dtype=np.uint8), flag)
