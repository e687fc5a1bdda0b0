"""The job queue: order, persistence, atomic files, validation, cancel/stop/retry, and resuming
an interrupted job with the same frames as an uninterrupted run (the bundled demo model)."""

from __future__ import annotations

import json
import os
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from framepack.errors import UserError
from framepack.options import GenerationOptions
from framepack.queue import JobQueue, Pipelines, Worker
from framepack.queue.store import worker_lock
from framepack.video import read_video


class Crash(BaseException):
    """Stands for a kill -9: nothing after it runs (not even the job's `except Exception`)."""


@pytest.fixture(scope="module")
def demo_pipelines():
    from framepack.pipeline import FramePackPipeline

    pipe = FramePackPipeline.from_pretrained("demo")
    pipelines = Pipelines()
    pipelines.put("demo", json.loads(json.dumps(_default_load())), pipe)
    return pipelines


def _default_load() -> dict:
    import dataclasses

    from framepack.components import LoadOptions

    return dataclasses.asdict(LoadOptions())


def _png(path, size=(64, 64)):
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return str(path)


# ---------------------------------------------------------------------- order and persistence


def test_jobs_run_in_queue_order_front_and_moves(tmp_path):
    q = JobQueue(tmp_path)
    a, b, c = (q.add(GenerationOptions(prompt=p, seconds=1)) for p in "abc")
    assert [j.id for j in q.jobs()] == [a.id, b.id, c.id]
    now = q.add(GenerationOptions(prompt="now", seconds=1), front=True)
    assert q.next_job().id == now.id
    q.move(c.id, -1)
    assert [j.prompt for j in q.jobs()] == ["now", "a", "c", "b"]
    q.move(now.id, +10)
    assert [j.prompt for j in q.jobs()] == ["a", "c", "b", "now"]
    # an interrupted ("running" with no worker) job goes first
    q.update(b.id, lambda j: setattr(j, "status", "running"))
    assert q.next_job().id == b.id


def test_queue_persists_one_json_per_job(tmp_path):
    q = JobQueue(tmp_path)
    job = q.add(
        GenerationOptions(prompts="0s: the camera pans left; 0.5s: it holds still", seconds=1, seed=5)
    )
    again = JobQueue(tmp_path)  # a restart
    assert [j.id for j in again.jobs()] == [job.id]
    data = json.loads((tmp_path / "queue" / f"{job.id}.json").read_text())
    assert data["format"] == "framepack-queue-job" and data["status"] == "queued"
    assert data["options"]["seed"] == 5 and "out" not in data["options"]
    assert again.get(job.id).generation_options(again.video(job)).out == str(tmp_path / f"{job.id}.mp4")


def test_writes_are_atomic(tmp_path, monkeypatch):
    q = JobQueue(tmp_path)
    job = q.add(GenerationOptions(prompt="a", seconds=1))
    before = q.path(job.id).read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        q.update(job.id, lambda j: setattr(j, "status", "cancelled"))
    monkeypatch.undo()
    assert q.path(job.id).read_bytes() == before  # the old file is whole
    assert [p.name for p in q.folder.iterdir() if p.name.endswith(".json")] == [f"{job.id}.json"]
    # a kill -9 mid-write leaves a hidden temporary file: never read as a job, removed by the worker
    litter = q.folder / f".{job.id}.json.0123abcd.tmp.json"
    litter.write_text("{half")
    assert [j.id for j in q.jobs()] == [job.id]
    q.remove_litter()
    assert not litter.exists()


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (GenerationOptions(seconds=0), "--seconds must be > 0, got 0"),
        (GenerationOptions(prompts="0s: a; x: b"), "--prompts: prompt timeline entry 2"),
        (GenerationOptions(prompts="0s: a; 9s: b", seconds=2), "starts after the video ends"),
        (GenerationOptions(image="/nonexistent.png"), "--image: no such file"),
        (GenerationOptions(steps=0), "--steps must be between 1 and 1000"),
        (GenerationOptions(out="x.mp4"), "--out: the queue chooses this itself"),
        (GenerationOptions(resume=True), "--resume: the queue chooses this itself"),
    ],
)
def test_bad_requests_get_the_cli_messages(tmp_path, options, message):
    q = JobQueue(tmp_path)
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        q.add(options)
    assert q.jobs() == []


def test_images_are_checked_and_copied(tmp_path):
    q = JobQueue(tmp_path / "out")
    with pytest.raises(UserError, match=r"--image: cannot read notes\.png as an image"):
        q.add(GenerationOptions(image=str(_text(tmp_path / "notes.png"))))
    with pytest.raises(UserError, match="at least 32 pixels"):
        q.add(GenerationOptions(image=_png(tmp_path / "tiny.png", (8, 8))))
    with pytest.raises(UserError, match="aspect ratio over 4:1"):
        q.add(GenerationOptions(end_image=_png(tmp_path / "wide.png", (400, 40))))
    Image.new("RGB", (64, 64)).save(tmp_path / "a.gif")
    with pytest.raises(UserError, match="is a GIF image; give a PNG, JPEG, WebP or BMP") as err:
        q.add(GenerationOptions(keyframes=[(0.5, str(tmp_path / "a.gif"))], seconds=1))
    assert str(err.value).startswith(f"--keyframe at 0.5s ({tmp_path / 'a.gif'}): ")  # the CLI's label
    job = q.add(GenerationOptions(image=_png(tmp_path / "me.png"), seconds=1))
    (tmp_path / "me.png").unlink()  # the upload goes away; the job keeps its copy
    kept = job.options["image"]
    assert kept.startswith(str(q.inputs)) and os.path.isfile(kept)


def _text(path):
    path.write_text("not an image")
    return path


# ---------------------------------------------------------------------- cancel, stop, retry


def test_cancel_stop_retry_transitions(tmp_path):
    q = JobQueue(tmp_path)
    a, b = q.add(GenerationOptions(prompt="a", seconds=1)), q.add(GenerationOptions(prompt="b", seconds=1))
    assert q.cancel(a.id).status == "cancelled"
    assert q.next_job().id == b.id
    with pytest.raises(UserError, match="is cancelled; there is nothing to cancel"):
        q.cancel(a.id)
    with pytest.raises(UserError, match="only stopped, failed or cancelled jobs retry"):
        q.retry(b.id)
    with pytest.raises(UserError, match="not running"):
        q.stop(b.id)
    again = q.retry(a.id)
    assert again.status == "queued" and [j.id for j in q.jobs()] == [b.id, a.id]  # retried at the end
    q.update(b.id, lambda j: setattr(j, "status", "running"))
    assert q.stop(b.id).stop_requested
    with pytest.raises(UserError, match="no job 'nope'"):
        q.get("nope")


def test_one_worker_per_queue(tmp_path):
    q = JobQueue(tmp_path)
    q.add(GenerationOptions(prompt="a", seconds=1))
    with worker_lock(q) as held:
        assert held is not None
        with pytest.raises(UserError, match=rf"another worker \(pid {os.getpid()}\) is running the queue"):
            Worker(q).run(until_empty=True)


def test_a_failing_job_does_not_stop_the_queue(tmp_path):
    calls = []

    def generate(options, **kwargs):
        calls.append(options.prompt)
        if options.prompt == "bad":
            raise UserError("--prompts: entries at 0s and 0.01s fall on the same latent frame")
        return SimpleNamespace(stopped=False, frames=30, latents=torch.zeros(2))

    fake = SimpleNamespace(generate=generate, components=None)
    q = JobQueue(tmp_path)
    for prompt in ("bad", "good"):
        q.add(GenerationOptions(prompt=prompt, seconds=1))
    worker = Worker(q, pipelines=Pipelines(loader=lambda model, load: fake))
    worker._callback = lambda *args: None  # the fake has no model to preview
    assert worker.run(until_empty=True) == 2
    bad, good = q.jobs()
    assert calls == ["bad", "good"]
    assert (bad.status, bad.error) == (
        "failed",
        "--prompts: entries at 0s and 0.01s fall on the same latent frame",
    )
    assert (good.status, good.frames) == ("done", 30)


def test_generate_now_starts_at_once_or_right_after_the_running_job(tmp_path):
    """ "Generate now" = first in the queue + `wake()`: an idle worker starts the job at once (not
    at its next poll, a minute away); a busy one finishes its job (never two at a time), then
    takes the new one before the jobs queued earlier."""
    started: list[str] = []
    running: list[str] = []
    overlaps: list[list[str]] = []
    release = threading.Event()

    def generate(options, **kwargs):
        running.append(options.prompt)
        if len(running) > 1:
            overlaps.append(list(running))
        started.append(options.prompt)
        if options.prompt == "long":
            release.wait(30)
        running.remove(options.prompt)
        return SimpleNamespace(stopped=False, frames=30, latents=torch.zeros(2))

    fake = SimpleNamespace(generate=generate, components=None)
    q = JobQueue(tmp_path)
    worker = Worker(q, pipelines=Pipelines(loader=lambda model, load: fake), poll=60)
    worker._callback = lambda *args: None  # the fake has no model to preview
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    _wait_for(lambda: worker.state == "idle")

    long = q.add(GenerationOptions(prompt="long", seconds=1), front=True)
    worker.wake()
    _wait_for(lambda: started == ["long"])  # at once, not after the 60-s poll
    assert q.running().id == long.id
    later = q.add(GenerationOptions(prompt="later", seconds=1))
    now = q.add(GenerationOptions(prompt="now", seconds=1), front=True)
    worker.wake()
    time.sleep(0.3)
    assert started == ["long"] and q.get(now.id).status == "queued"  # the running job goes on
    release.set()
    _wait_for(lambda: [j.status for j in q.jobs()] == ["done"] * 3)
    assert started == ["long", "now", "later"] and overlaps == []
    assert q.get(long.id).status == "done" and q.get(later.id).attempts == 1
    worker.shutdown.set()  # also wakes the idle worker: it ends now, not at its next poll
    thread.join(timeout=5)
    assert not thread.is_alive()


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# ---------------------------------------------------------------------- resume (the demo model)

OPTIONS = {"prompt": "the camera pans left steadily", "seconds": 1.0, "seed": 11, "steps": 6}


def _frames(path) -> np.ndarray:
    return read_video(path)[0]


def test_interrupted_jobs_resume_to_the_same_video(tmp_path, demo_pipelines):
    q = JobQueue(tmp_path)
    plain, crashed, stopped = (q.add(GenerationOptions(**OPTIONS)) for _ in range(3))
    Worker(q, pipelines=demo_pipelines).run_job(q.get(plain.id))

    def crash_in_third_section(job, section, step):
        if job.id == crashed.id and section.step == 2 and step == 2:
            raise Crash

    with pytest.raises(Crash):
        Worker(q, pipelines=demo_pipelines, on_step=crash_in_third_section).run(until_empty=True)
    assert q.get(crashed.id).status == "running"  # as a kill -9 leaves it
    assert q.video(crashed).with_suffix(".resume.safetensors").exists()

    def stop_in_second_section(job, section, step):
        if job.id == stopped.id and section.step == 1 and step == 0:
            q.stop(job.id)

    # a new worker (a restart) resumes the crashed job first, then runs and stops the third
    Worker(q, pipelines=demo_pipelines, on_step=stop_in_second_section).run(until_empty=True)
    assert q.get(crashed.id).status == "done" and q.get(crashed.id).attempts == 2
    assert q.get(stopped.id).status == "stopped"
    assert 0 < len(_frames(q.video(stopped))) < 30  # it kept what it made
    q.retry(stopped.id)
    Worker(q, pipelines=demo_pipelines).run(until_empty=True)
    assert q.get(stopped.id).status == "done"
    # the same latents as the uninterrupted run, hence the same frames before encoding (x264 with
    # threads does not encode equal frames to equal bytes, so the MP4s are compared loosely)
    expected = q.get(plain.id).latents_sha256
    assert expected is not None and len(_frames(q.video(plain))) == 30
    for job in (crashed, stopped):
        assert q.get(job.id).latents_sha256 == expected, job.id
        assert q.get(job.id).frames == 30
        error = np.abs(_frames(q.video(job)).astype(int) - _frames(q.video(plain))).mean()
        assert error < 3, (job.id, error)
        assert not q.video(job).with_suffix(".resume.safetensors").exists()
        assert not q.preview_folder(job).exists()


def test_cancel_a_running_job_ends_it_after_the_step(tmp_path, demo_pipelines):
    q = JobQueue(tmp_path)
    job = q.add(GenerationOptions(**OPTIONS))
    seen = []

    def cancel_at_first_step(j, section, step):
        seen.append((section.step, step))
        if len(seen) == 1:
            q.cancel(j.id)

    Worker(q, pipelines=demo_pipelines, on_step=cancel_at_first_step).run(until_empty=True)
    assert q.get(job.id).status == "cancelled"
    assert len(seen) <= 2  # the stop is read with the first progress write


def test_extend_a_gallery_video_through_the_queue(tmp_path, demo_pipelines):
    """The gallery's "extend this video": its settings into the form, extend set, queued, run."""
    from framepack.ui import views
    from framepack.ui.requests import form_from_settings, options_from_form

    q = JobQueue(tmp_path)
    first = q.add(GenerationOptions(**OPTIONS))
    worker = Worker(q, pipelines=demo_pipelines)
    worker.run(until_empty=True)
    assert views.video_choices(tmp_path)[0][1] == q.video(first).name
    spec = demo_pipelines.get("demo", json.loads(json.dumps(_default_load()))).components.spec
    values, notes = form_from_settings(views.read_settings(q.video(first)), tmp_path, spec.example_image)
    assert notes == [] and values["image"] is None  # the model's example image: an empty image
    values.update(extend=q.video(first).name, plan="forward", seconds=0.5)
    more = q.add(options_from_form(values, tmp_path))
    assert more.options["extend"] == str(q.video(first)) and more.options["seed"] == OPTIONS["seed"]
    worker.run(until_empty=True)
    done = q.get(more.id)
    assert done.status == "done", done.error
    frames, before = _frames(q.video(more)), _frames(q.video(first))
    assert done.frames == len(frames) > 15  # what it kept of the video, then 0.5 s more
    kept = len(frames) - 15
    assert np.abs(frames[:kept].astype(int) - before[-kept:].astype(int)).mean() < 8
    assert views.read_settings(q.video(more))["extend"] == str(q.video(first))
