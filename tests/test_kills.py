"""kill -9 aimed at every phase of a job, then `--resume`: the result equals an uninterrupted run.

Generation (three plans): before the first resume part, between parts, after the last part,
while the final video is moved into place, before its sidecar. Training: between a checkpoint's
tensors and its JSON, and while the run's bundle is written. The kills come from
tests/kill_at.py, which wraps the shipped functions from outside and SIGKILLs the process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from framepack.model_bundle import load_bundle
from framepack.resume import parts_path, resume_path
from framepack.train.loop import read_log
from framepack.video import read_video

ROOT = Path(__file__).resolve().parents[1]
KILL_AT = str(Path(__file__).with_name("kill_at.py"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
GENERATE = ["generate", "--seconds", "1.2", "--steps", "3", "--seed", "5", "--quiet"]
PHASES = ["part-before:1", "part-after:2", "part-after:last", "final-write", "sidecar"]


def _framepack(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "framepack", *argv]
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def _killed(phase: str, *argv: str, cwd: Path) -> None:
    cmd = [sys.executable, KILL_AT, phase, "--", *argv]
    result = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-2000:])


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, Path]:
    """One uninterrupted video per plan."""
    folder = tmp_path_factory.mktemp("reference")
    out = {}
    for plan in ("forward", "inverted", "endpoints"):
        result = _framepack(*GENERATE, "--plan", plan, "--out", f"{plan}.mp4", cwd=folder)
        assert result.returncode == 0, result.stderr[-2000:]
        out[plan] = folder / f"{plan}.mp4"
    return out


@pytest.mark.parametrize("plan", ["forward", "inverted", "endpoints"])
@pytest.mark.parametrize("phase", PHASES)
def test_generation_killed_then_resumed_equals_an_uninterrupted_run(references, tmp_path, plan, phase):
    args = [*GENERATE, "--plan", plan, "--out", "v.mp4"]
    _killed(phase, *args, cwd=tmp_path)
    result = _framepack(*args, "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    frames, _ = read_video(tmp_path / "v.mp4")
    expected, _ = read_video(references[plan])
    assert frames.shape == expected.shape and np.array_equal(frames, expected)
    assert json.loads((tmp_path / "v.json").read_text())["complete"] is True
    assert not resume_path(tmp_path / "v.mp4").exists() and not parts_path(tmp_path / "v.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.json", "v.mp4"]  # no litter


TRAIN = ["train", "--preset", "tiny-test", "--out", "run", "--steps", "9", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    assert _framepack(*TRAIN, cwd=folder).returncode == 0
    return folder / "run"


@pytest.mark.parametrize("phase", ["ckpt-json:2", "bundle"])
def test_training_killed_then_resumed_equals_an_uninterrupted_run(trained, tmp_path, phase):
    _killed(phase, *TRAIN, cwd=tmp_path)
    result = _framepack("train", "--out", "run", "--resume", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "run"
    assert [(r["step"], r["loss"]) for r in read_log(run / "log.jsonl")] == [
        (r["step"], r["loss"]) for r in read_log(trained / "log.jsonl")
    ]
    got, want = load_bundle(run / "bundle").transformer, load_bundle(trained / "bundle").transformer
    for (name, a), b in zip(got.state_dict().items(), want.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not [p for p in run.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]  # no litter
