"""Several training processes (torchrun, gloo on the CPU): DDP keeps the replicas identical and
matches one process with the same global batch; the FSDP2 path trains and resumes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from framepack.train.config import PRESETS
from framepack.train.loop import read_log

TINY = PRESETS["tiny-test"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "framepack", "train", *args, "--no-progress"]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=300)


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_log(run / "log.jsonl")]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("single") / "run"
    subprocess.run([sys.executable, "-m", "framepack", "train", "--preset", "tiny-test", "--out", str(run),
                    "--no-progress"], check=True)  # fmt: skip
    return run


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_and_stay_identical(single, tmp_path):
    run = tmp_path / "ddp"
    _torchrun("--preset", "tiny-test", "--out", str(run))
    assert _losses(run) == pytest.approx(_losses(single), rel=1e-5)
    for path in (run / "checkpoints").glob("*.json"):
        assert json.loads(path.read_text())["state"]["counters"]["replicas_identical"] is True


@pytest.mark.slow
def test_fsdp_two_processes_train_and_resume(single, tmp_path):
    config = tmp_path / "fsdp.json"
    config.write_text(json.dumps(TINY.replace(strategy="fsdp", steps=4).to_dict()))
    run = tmp_path / "fsdp"
    _torchrun("--config", str(config), "--out", str(run))
    _torchrun("--out", str(run), "--resume", "--steps", str(TINY.steps))
    assert [r["step"] for r in read_log(run / "log.jsonl")] == list(range(1, TINY.steps + 1))
    assert _losses(run) == pytest.approx(_losses(single), rel=1e-5)
    assert (run / "bundle" / "framepack.json").is_file()


@pytest.mark.slow
def test_a_one_process_run_continues_under_ddp_on_the_same_trajectory(single, tmp_path):
    """The demo was trained this way: started in one process, resumed with two (same global
    batch, micro-batches keyed by (seed, step, index)), so the losses match one process."""
    run = tmp_path / "switch"
    subprocess.run([sys.executable, "-m", "framepack", "train", "--preset", "tiny-test", "--out", str(run),
                    "--steps", "3", "--no-progress"], check=True)  # fmt: skip
    _torchrun("--out", str(run), "--resume", "--steps", str(TINY.steps))
    assert _losses(run) == pytest.approx(_losses(single), rel=1e-5)
    seconds = [r["seconds"] for r in read_log(run / "log.jsonl")]
    assert seconds == sorted(seconds)  # training time keeps counting across the resume
