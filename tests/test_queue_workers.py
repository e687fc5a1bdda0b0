"""Several workers on one queue, one per device: two real processes race for the jobs and never
take the same one; a dead worker's job is claimed again; the one-worker kind and the device
kind exclude each other; `framepack queue run --device` refuses a device that is not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from framepack.errors import UserError
from framepack.options import GenerationOptions
from framepack.queue import JobQueue, Pipelines, Worker
from framepack.queue.store import worker_lock

# A worker process: waits for the start file, then runs the queue on its device with a fake
# pipeline that logs (job, pid, device it was loaded on) and holds each job a little.
WORKER = """
import json, os, sys, time
from pathlib import Path
from types import SimpleNamespace
import torch
from framepack.queue import JobQueue, Pipelines, Worker

outputs, device, start = sys.argv[1], sys.argv[2], Path(sys.argv[3])
log = Path(outputs) / "log.jsonl"

def loader(model, load):
    def generate(options, **kwargs):
        line = json.dumps({"prompt": options.prompt, "pid": os.getpid(), "device": load.device})
        with open(log, "a") as f:  # one short append per line: whole lines from both processes
            f.write(line + "\\n")
        time.sleep(0.05)
        return SimpleNamespace(stopped=False, frames=30, latents=torch.zeros(2))
    return SimpleNamespace(generate=generate, components=None)

worker = Worker(JobQueue(outputs), pipelines=Pipelines(loader=loader), device=device, poll=0.05)
worker._callback = lambda *args: None  # the fake has no model to preview
while not start.exists():
    time.sleep(0.01)
print(worker.run(until_empty=True))
"""

JOBS = 24


def _fake_pipelines(log: list) -> Pipelines:
    def loader(model, load):
        def generate(options, **kwargs):
            log.append((options.prompt, load.device))
            return SimpleNamespace(stopped=False, frames=30, latents=torch.zeros(2))

        return SimpleNamespace(generate=generate, components=None)

    return Pipelines(loader=loader)


def _worker(q: JobQueue, log: list, device: str | None = None) -> Worker:
    worker = Worker(q, pipelines=_fake_pipelines(log), device=device, poll=0.01)
    worker._callback = lambda *args: None  # the fake has no model to preview
    return worker


@pytest.mark.slow
def test_two_worker_processes_never_take_the_same_job(tmp_path):
    q = JobQueue(tmp_path)
    prompts = [f"job {i}" for i in range(JOBS)]
    for prompt in prompts:
        q.add(GenerationOptions(prompt=prompt, seconds=1))
    start = tmp_path / "start"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path), device, str(start)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for device in ("cuda:0", "cuda:1")
    ]
    time.sleep(1.0)  # both import while the start file is missing; the later one still races
    start.touch()
    counts = [int(p.communicate(timeout=600)[0].strip()) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]

    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert sorted(r["prompt"] for r in lines) == sorted(prompts)  # every job once, none twice
    assert sum(counts) == JOBS and min(counts) >= 1, counts  # both took part
    by_pid = {}
    for r in lines:
        by_pid.setdefault(r["pid"], set()).add(r["device"])
    assert sorted(d for devices in by_pid.values() for d in devices) == ["cuda:0", "cuda:1"]
    jobs = q.jobs()
    assert [j.status for j in jobs] == ["done"] * JOBS and {j.attempts for j in jobs} == {1}
    assert {j.worker.split(" on ")[1] for j in jobs} == {"cuda:0", "cuda:1"}
    assert not list(q.folder.glob("*.claim"))  # released claims leave no files


def test_claims_are_exclusive_and_a_dead_workers_job_is_claimed_again(tmp_path):
    q = JobQueue(tmp_path)
    a, b = (q.add(GenerationOptions(prompt=p, seconds=1)) for p in "ab")
    first = q.claim(worker="w1")
    assert first.job.id == a.id and q.get(a.id).status == "running" and q.get(a.id).worker == "w1"
    second = q.claim(worker="w2")
    assert second.job.id == b.id  # a runs under a live claim: not taken twice
    assert q.claim(worker="w3") is None
    with pytest.raises(UserError, match=rf"job {a.id} is being run by another worker \(w1\)"):
        _worker(q, []).run_job(q.get(a.id))
    first._handle.close()  # the worker dies (kill -9): the OS drops its lock, the job stays running
    assert q.get(a.id).status == "running"
    again = q.claim(worker="w3")
    assert again.job.id == a.id and again.job.attempts == 2 and again.job.worker == "w3"
    again.release()
    second.release()
    assert not list(q.folder.glob("*.claim"))


def test_one_queue_worker_and_device_workers_exclude_each_other(tmp_path):
    q = JobQueue(tmp_path)
    for p in "ab":
        q.add(GenerationOptions(prompt=p, seconds=1))
    log: list = []
    pid = os.getpid()
    with worker_lock(q, "cuda:0") as held:
        assert held is not None
        with pytest.raises(UserError, match=rf"another worker \(pid {pid} on cuda:0\) is running the queue"):
            _worker(q, log).run(until_empty=True)
        with pytest.raises(UserError, match=rf"another worker \(pid {pid} on cuda:0\) is running the queue"):
            _worker(q, log, "cuda:0").run(until_empty=True)
        assert _worker(q, log, "cuda:1").run(until_empty=True) == 2  # another device: runs
    assert log == [("a", "cuda:1"), ("b", "cuda:1")]  # on the worker's device, not the job's
    q.add(GenerationOptions(prompt="c", seconds=1))
    with worker_lock(q) as held:
        assert held is not None
        with pytest.raises(UserError, match=rf"another worker \(pid {pid}\) is running the queue"):
            _worker(q, log, "cuda:1").run(until_empty=True)
    assert _worker(q, log).run(until_empty=True) == 1
    assert log[-1] == ("c", "auto")  # the one worker keeps each job's own device


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--device", "cuda:1"], "--device cuda:1: CUDA is not available here"),
        (["run", "--device", "gpu one"], "--device 'gpu one' is not a device"),
        (["add", "--parallel", "2"], "--parallel: the queue runs one job per worker"),
    ],
)
def test_cli_refuses_in_one_line(tmp_path, capsys, args, message):
    from framepack.cli import main

    if torch.cuda.is_available() and "cuda:1" in args:
        pytest.skip("this machine has CUDA")
    code = main(["queue", *args, "--outputs", str(tmp_path / "outputs")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "outputs").exists()
    assert Path(tmp_path).is_dir()
