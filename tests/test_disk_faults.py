"""What the disk and the files on it can do wrong (issue 23), through the real command.

A full disk and a read-only folder are injected at the write boundary (`framepack.disk`: every
atomic write flushes its temporary file there, so an OSError raised there is what a full disk
gives) and, where this process may mount file systems (root), also made real with a small or
read-only tmpfs. Every case must end with exit status 2, one line on stderr naming the path and
the cause, no traceback, no temporary file left, and every file that existed before unchanged;
finished sections and checkpoints stay resumable.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import framepack.disk
from framepack.cli import main
from framepack.errors import UserError
from framepack.resume import parts_path, resume_path
from framepack.video import read_video

ROOT = Path(__file__).resolve().parents[1]
GENERATE = ["generate", "--seconds", "1.2", "--steps", "2", "--seed", "3", "--quiet"]


def _refused(capsys, argv: list[str], *words: str) -> str:
    """Run the command; it must exit 2 with one line on stderr holding every word."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _litter(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial")]


@contextlib.contextmanager
def disk_fails(monkeypatch, code: int, name_part: str, after: int = 0):
    """Make the write boundary fail with `code` for files whose name holds `name_part`, after
    `after` such writes succeeded (what a disk that fills up, or turns read-only, gives)."""
    real, seen = framepack.disk._fsync_file, [0]

    def fsync(path: Path) -> None:
        if name_part in path.name:
            seen[0] += 1
            if seen[0] > after:
                raise OSError(code, os.strerror(code), str(path))
        real(path)

    monkeypatch.setattr(framepack.disk, "_fsync_file", fsync)
    yield
    monkeypatch.setattr(framepack.disk, "_fsync_file", real)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> np.ndarray:
    """The frames of an uninterrupted job."""
    folder = tmp_path_factory.mktemp("reference")
    assert main([*GENERATE, "--out", str(folder / "ref.mp4")]) == 0
    return read_video(folder / "ref.mp4")[0]


# ------------------------------------------------------------------------- the write boundary


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT])
def test_atomic_write_refused_in_one_line_keeps_the_old_file(tmp_path, monkeypatch, code):
    target = tmp_path / "f.json"
    target.write_text("old")
    with (
        disk_fails(monkeypatch, code, "f.json"),
        pytest.raises(UserError) as err,
        framepack.disk.atomic_path(target) as tmp,
    ):
        tmp.write_text("new")
    assert str(target) in str(err.value) and os.strerror(code) in str(err.value)
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_safetensors_errors_are_read_for_their_errno():
    class SafetensorError(Exception):
        pass

    err = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert framepack.disk.error_code(err) == errno.ENOSPC
    assert framepack.disk.disk_error(ValueError("x")) is None


# ------------------------------------------------------------------------- full disk: generate


def test_full_disk_keeps_finished_sections_and_resume_gives_the_same_frames(
    tmp_path, monkeypatch, capsys, reference
):
    out = tmp_path / "v.mp4"
    with disk_fails(monkeypatch, errno.ENOSPC, "section_", after=2):
        err = _refused(capsys, [*GENERATE, "--out", str(out)], "section_00002", "No space left on device")
    assert "cannot write" in err and not _litter(tmp_path)
    assert len(list(parts_path(out).glob("section_*"))) == 2  # the finished sections are kept
    assert main([*GENERATE, "--out", str(out), "--resume"]) == 0
    np.testing.assert_array_equal(read_video(out)[0], reference)
    assert not resume_path(out).exists()


def test_overwrite_keeps_the_old_video_until_the_new_one_is_complete(tmp_path, monkeypatch, capsys):
    out = tmp_path / "v.mp4"
    assert main([*GENERATE, "--seed", "9", "--out", str(out)]) == 0
    before = _hashes(tmp_path)
    with disk_fails(monkeypatch, errno.ENOSPC, "v.mp4"):  # the final video's write fails
        _refused(capsys, [*GENERATE, "--out", str(out), "--overwrite"], str(out), "No space left")
    after = _hashes(tmp_path)
    for name in ("v.mp4", "v.json"):
        assert after[name] == before[name], name  # no partial render replaced the old video
    assert not _litter(tmp_path)


def test_an_overwrite_resumed_keeps_the_old_video_until_the_new_one_is_complete(
    tmp_path, monkeypatch, capsys, reference
):
    out = tmp_path / "v.mp4"
    assert main([*GENERATE, "--seed", "9", "--out", str(out)]) == 0
    old = {name: _hashes(tmp_path)[name] for name in ("v.mp4", "v.json")}
    with disk_fails(monkeypatch, errno.ENOSPC, "section_", after=1):
        _refused(capsys, [*GENERATE, "--out", str(out), "--overwrite"], "section_00001", "No space left")
    with disk_fails(monkeypatch, errno.ENOSPC, "section_", after=1):  # one more section, then full
        _refused(capsys, [*GENERATE, "--out", str(out), "--resume"], "section_00002", "No space left")
    assert len(list(parts_path(out).glob("section_*"))) == 2
    assert {name: _hashes(tmp_path)[name] for name in old} == old  # no in-progress copy replaced it
    assert main([*GENERATE, "--out", str(out), "--resume"]) == 0
    np.testing.assert_array_equal(read_video(out)[0], reference)
    assert json.loads((tmp_path / "v.json").read_text())["complete"] is True
    assert not resume_path(out).exists() and not _litter(tmp_path)


def test_resume_of_a_finished_job_says_it_is_finished(tmp_path, capsys):
    out = tmp_path / "v.mp4"
    assert main([*GENERATE, "--out", str(out)]) == 0
    before = _hashes(tmp_path)
    _refused(capsys, [*GENERATE, "--out", str(out), "--resume"], "already finished")
    _refused(capsys, [*GENERATE, "--out", str(tmp_path / "none.mp4"), "--resume"], "nothing to resume")
    assert _hashes(tmp_path) == before


def test_preview_in_a_folder_that_refuses_files(tmp_path, monkeypatch, capsys):
    with disk_fails(monkeypatch, errno.EROFS, "section0000"):
        _refused(capsys, [*GENERATE, "--out", str(tmp_path / "v.mp4"), "--preview", str(tmp_path / "p")],
                 "Read-only file system", "section0000.png")  # fmt: skip
    assert not _litter(tmp_path)


# ------------------------------------------------------------------------- long names


@pytest.mark.parametrize(
    ("command", "sidecar"),  # sidecar: a name that fits, though a file beside it would not
    [(["generate", "--seconds", "0.5"], 230), (["world", "--seconds", "0.2", "--size", "16"], 232)],
)
def test_names_the_file_system_cannot_hold_are_refused_before_any_work(tmp_path, capsys, command, sidecar):
    suffix = ".mp4"
    for stem in ("a" * (255 - len(suffix)), "b" * sidecar):  # the video's name, then a sidecar's
        _refused(capsys, [*command, "--out", str(tmp_path / f"{stem}{suffix}")], "too long", "--out")
    deep = tmp_path.joinpath(*["d" * 200] * 21) / f"v{suffix}"  # over 4,096 bytes
    _refused(capsys, [*command, "--out", str(deep)], "4096")
    assert list(tmp_path.iterdir()) == []


def test_eval_sheet_with_a_long_name(tmp_path, capsys):
    assert main(["world", "--seconds", "0.2", "--size", "16", "--out", str(tmp_path / "w.mp4")]) == 0
    before = _hashes(tmp_path)
    _refused(capsys, ["eval", "sheet", str(tmp_path / "w.mp4"), "--out", str(tmp_path / ("s" * 252 + ".png"))],
             "too long")  # fmt: skip
    assert _hashes(tmp_path) == before


def test_world_on_a_full_disk_names_its_file_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    for name in ("w.mp4", "w.json"):
        with disk_fails(monkeypatch, errno.ENOSPC, name):
            _refused(capsys, ["world", "--seconds", "0.2", "--size", "16", "--out", str(tmp_path / "w.mp4"),
                              "--overwrite"], str(tmp_path / name))  # fmt: skip
        assert not _litter(tmp_path)


# ------------------------------------------------------------------------- long jobs


def test_an_hour_at_120_fps_plans_in_seconds_and_bounded_memory():
    from framepack.plans import plan_for_length

    for strategy in ("forward", "endpoints"):
        tracemalloc.start()
        start = time.perf_counter()
        plan = plan_for_length(strategy, 108_001, window=9)  # 3600 s x 120 fps / 4 + 1 latents
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(plan) == 12_000 and seconds < 60 and peak < 100 * 2**20, (seconds, peak)
        last = plan[-1]
        assert len(last.history) == 108_001 - 9 - 1  # every other frame but the start anchor


@pytest.mark.parametrize("strategy", ["forward", "inverted", "endpoints", "multi-endpoint"])
def test_histories_are_the_nearest_available_frames(strategy):
    """The on-demand history equals its definition: every available frame but the anchors,
    sorted by distance (earlier frame first at equal distance)."""
    from framepack.plans import Anchor, plan_for_length

    anchors = (Anchor(20, prompt=1), Anchor(33, image=True)) if strategy == "multi-endpoint" else ()
    plan = plan_for_length(strategy, 61, window=4, end_image=strategy != "forward", anchors=anchors)
    for section in plan:
        available = plan.available_after(section.step) - set(section.anchors)

        def distance(t: int, s=section) -> tuple[int, int]:
            return (s.start - t, 0) if t < s.start else (t - s.stop + 1, 1)

        assert tuple(section.history) == tuple(sorted(available, key=distance))
        assert len(section.history) == len(available)
    assert plan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


# ------------------------------------------------------------------------- training


TRAIN = ["train", "--preset", "tiny-test", "--no-progress", "--threads", "1"]


def test_training_on_a_full_disk_and_its_export(tmp_path, monkeypatch, capsys):
    from safetensors import SafetensorError

    import framepack.model_bundle as bundles
    import framepack.train.checkpoint as checkpoint

    def full(tensors, path):  # what safetensors raises on a full disk
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    run = tmp_path / "run"
    monkeypatch.setattr(checkpoint, "save_file", full)
    _refused(capsys, [*TRAIN, "--out", str(run), "--steps", "2"], "step-0000002.safetensors", "No space")
    monkeypatch.undo()
    assert not _litter(run)
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0  # space again
    bundle = tmp_path / "bundle"
    assert main(["train", "--out", str(run), "--export", str(bundle)]) == 0
    before = _hashes(tmp_path)
    real = bundles.os.replace

    def full(src, dst):  # the new bundle cannot be moved into place
        if Path(dst) == bundle and Path(src).name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        real(src, dst)

    monkeypatch.setattr(bundles.os, "replace", full)
    _refused(
        capsys, ["train", "--out", str(run), "--export", str(bundle), "--overwrite"], str(bundle), "No space"
    )
    monkeypatch.setattr(bundles.os, "replace", real)
    assert _hashes(tmp_path) == before and not _litter(tmp_path)  # the old bundle is back in place


def test_sigterm_stops_training_after_the_step_with_a_checkpoint(tmp_path, monkeypatch, capsys):
    import framepack.train.loop as loop
    from framepack.train.loop import read_log

    assert main([*TRAIN, "--out", str(tmp_path / "whole"), "--steps", "4"]) == 0
    real, calls = loop.train_step, [0]

    def step_then_term(*args, **kwargs):
        calls[0] += 1
        loss = real(*args, **kwargs)
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(loop, "train_step", step_then_term)
    run = tmp_path / "run"
    assert main([*TRAIN, "--out", str(run), "--steps", "4"]) == 130
    err = capsys.readouterr().err.strip()
    assert "stopped by SIGTERM after step 2" in err and "\n" not in err, err
    assert (run / "checkpoints" / "step-0000002.json").is_file() and not (run / "bundle").exists()
    monkeypatch.setattr(loop, "train_step", real)
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert [r["loss"] for r in read_log(run / "log.jsonl")] == [
        r["loss"] for r in read_log(tmp_path / "whole" / "log.jsonl")
    ]


def test_resume_without_the_model_folder_refuses_instead_of_restarting(tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    assert main([*TRAIN, "--out", str(run), "--steps", "2"]) == 0
    shutil.rmtree(run / "model")
    before = _hashes(tmp_path)
    _refused(capsys, ["train", "--out", str(run), "--resume", "--steps", "4"], "model folder", "missing")
    assert _hashes(tmp_path) == before
    (run / "config.json").write_text("{broken")
    _refused(capsys, ["train", "--out", str(run), "--resume"], "config.json", "not valid JSON")


@pytest.mark.parametrize(
    ("content", "word"),
    [
        ('{"seed": "x"}', "seed must be an integer"),
        ('{"model": [1]}', "model must be a string"),
        ('{"model": "gigantic"}', "model must be one of"),
        ('{"lr": Infinity}', "lr must be a finite number"),
        ('{"data": {"size": "big"}}', "data.size"),
        ('{"layouts": "forward"}', "layouts must be a list"),
        (b"\xff\xfe{\x00}\x00", "UTF-16"),
    ],
)
def test_training_configs_with_wrong_types_are_refused_naming_the_key(tmp_path, capsys, content, word):
    config = tmp_path / "c.json"
    config.write_bytes(content if isinstance(content, bytes) else content.encode())
    _refused(capsys, ["train", "--config", str(config), "--out", str(tmp_path / "run")], word, str(config))
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------- the queue

HEAD = {"format": "framepack-queue-job", "format_version": 1}
BROKEN = {
    "list.json": "[]",
    "null.json": "null",
    "position.json": json.dumps({**HEAD, "id": "position", "options": {}, "position": "first"}),
    "seconds.json": json.dumps({**HEAD, "id": "seconds", "options": {"seconds": "five"}}),
    "unknown.json": json.dumps({**HEAD, "id": "unknown", "options": {"bogus": 1}}),
    "status.json": json.dumps({**HEAD, "id": "status", "options": {}, "status": "sleeping"}),
    "escape.json": json.dumps({**HEAD, "id": "../../escaped", "options": {}}),
    "twin.json": json.dumps({**HEAD, "id": "ok", "options": {"seconds": 0.3, "steps": 1}}),
    "garbage.json": "\x00\x01 not json",
    "truncated.json": json.dumps({**HEAD, "id": "truncated", "options": {}})[:30],
    "utf16.json": "",
}


def _queue_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "out" / "queue"
    folder.mkdir(parents=True)
    for name, text in BROKEN.items():
        (folder / name).write_bytes(text.encode("utf-16") if name == "utf16.json" else text.encode())
    (folder / "ok.json").write_text(json.dumps({**HEAD, "id": "ok", "options": {"seconds": 0.3, "steps": 1}}))
    return folder


def test_broken_job_files_are_listed_never_run_and_never_loop(tmp_path, capsys):
    folder = _queue_folder(tmp_path)
    broken = {name: (folder / name).read_bytes() for name in BROKEN}
    assert main(["queue", "list", "--outputs", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ok ")
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(BROKEN)
    assert all("broken:" in line for line in lines[1:])
    start = time.perf_counter()
    assert main(["queue", "run", "--outputs", str(tmp_path / "out")]) == 0  # ends: no loop
    assert time.perf_counter() - start < 120
    assert capsys.readouterr().out.count("ok: done") == 1
    assert {name: (folder / name).read_bytes() for name in BROKEN} == broken
    assert not (tmp_path / "escaped.json").exists() and not (tmp_path / "escaped.mp4").exists()
    _refused(capsys, ["queue", "cancel", "twin", "--outputs", str(tmp_path / "out")], "twin.json", "broken")


def test_adding_a_job_beside_broken_files_works(tmp_path):
    from framepack.options import GenerationOptions
    from framepack.queue import JobQueue

    _queue_folder(tmp_path)
    queue = JobQueue(tmp_path / "out")
    job = queue.add(GenerationOptions(seconds=0.5))
    assert queue.get(job.id).id == job.id and len(queue.broken()) == len(BROKEN)


def test_a_file_where_the_queue_folder_should_be(tmp_path, capsys):
    (tmp_path / "queue").write_text("not a folder")
    for action in ("list", "run"):
        _refused(capsys, ["queue", action, "--outputs", str(tmp_path)], "queue is a file")


# ------------------------------------------------------------------------- lora convert, memory


@pytest.fixture
def lora_file(tmp_path) -> Path:
    import torch

    from framepack.lora import LoraPair
    from framepack.lora_train.adapters import save_lora

    name = "transformer_blocks.0.attn.to_q"
    pair = LoraPair(torch.zeros(2, 3072), torch.zeros(3072, 2))
    return save_lora(tmp_path / "in.safetensors", {name: pair}, "kohya")


def test_lora_convert_follows_the_writers_rules(tmp_path, capsys, lora_file):
    taken = tmp_path / "taken.safetensors"
    taken.write_bytes(b"keep me")
    (tmp_path / "folder.safetensors").mkdir()
    before = _hashes(tmp_path)
    convert = ["lora", "convert", str(lora_file)]
    _refused(capsys, [*convert, str(taken), "--to", "diffusers"], "already exists")
    _refused(capsys, [*convert, str(lora_file), "--to", "diffusers", "--overwrite"], "input file")
    _refused(capsys, [*convert, str(tmp_path / "no" / "o.safetensors"), "--to", "kohya"], "does not exist")
    _refused(capsys, [*convert, str(tmp_path / "folder.safetensors"), "--to", "kohya"], "directory")
    assert _hashes(tmp_path) == before
    assert main([*convert, str(taken), "--to", "diffusers", "--overwrite"]) == 0
    assert taken.read_bytes() != b"keep me"


@pytest.mark.parametrize(
    ("flags", "word"), [(["--window", "0"], "--window"), (["--bucket", "100000"], "--bucket"),
                        (["--rank", "0"], "--rank")]
)  # fmt: skip
def test_lora_memory_bounds(capsys, flags, word):
    _refused(capsys, ["lora", "memory", *flags], word)


# ------------------------------------------------------------------------- real file systems


def _mount(folder: Path, options: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    return result.returncode == 0


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "framepack", *argv]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (root), unmounted afterwards."""
    disk = tmp_path / "disk"
    if not _mount(disk, "size=2m"):
        pytest.skip("mounting a tmpfs needs root (the injected ENOSPC cases above run everywhere)")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


def test_a_real_full_disk(small_disk, tmp_path):
    job = [*GENERATE, "--seconds", "10", "--out", "v.mp4"]
    result = _cli(*job, cwd=small_disk)
    err = result.stderr.strip()
    assert result.returncode == 2 and "\n" not in err and "No space left on device" in err, err
    assert any(parts_path(small_disk / "v.mp4").iterdir()) and not _litter(small_disk)
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    assert _cli(*job, "--resume", cwd=small_disk).returncode == 0
    assert _cli(*job, cwd=tmp_path).returncode == 0  # uninterrupted
    np.testing.assert_array_equal(read_video(small_disk / "v.mp4")[0], read_video(tmp_path / "v.mp4")[0])


@pytest.fixture
def read_only(tmp_path):
    """A folder no file can be written in: chmod 555 (not root) or a read-only tmpfs (root)."""
    folder = tmp_path / "ro"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if not _mount(folder, "ro,size=1m"):
        pytest.skip("no read-only folder can be made here")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_read_only_folders(read_only, tmp_path, capsys, lora_file):
    cases = [
        ([*GENERATE, "--out", str(read_only / "v.mp4")], "not writable"),
        ([*GENERATE, "--out", str(tmp_path / "v.mp4"), "--preview", str(read_only / "p")], str(read_only)),
        (["world", "--seconds", "0.2", "--size", "16", "--out", str(read_only / "w.mp4")], "not writable"),
        ([*TRAIN, "--out", str(read_only / "run"), "--steps", "1"], str(read_only)),
        (["queue", "add", "--seconds", "0.5", "--outputs", str(read_only)], str(read_only)),
        (["queue", "run", "--outputs", str(read_only)], str(read_only)),
        (["lora", "convert", str(lora_file), str(read_only / "o.safetensors"), "--to", "kohya"], "writable"),
        (["eval", "sheet", str(lora_file), "--out", str(read_only / "s.png")], "writable"),
    ]
    for argv, word in cases:
        _refused(capsys, argv, word)
    assert not _litter(tmp_path)


def test_a_bad_preview_folder_is_refused_before_the_model_loads(read_only, tmp_path, monkeypatch, capsys):
    from framepack.pipeline import FramePackPipeline

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before --preview was checked")

    monkeypatch.setattr(FramePackPipeline, "from_pretrained", load)
    (tmp_path / "notes.txt").write_text("a file")
    before = _hashes(tmp_path)
    cases = [
        (read_only, "cannot write in this folder"),  # exists, takes no file
        (read_only / "p" / "q", f"({read_only}, where it would be created"),
        (Path("/proc/framepack-preview"), "cannot write in this folder (/proc, where it would be created"),
        (Path("/proc/self"), "cannot write in this folder"),
        (tmp_path / "notes.txt", "is a file, not a folder"),
        (tmp_path / "notes.txt" / "p", "is a file, not a folder"),
    ]
    for folder, words in cases:
        _refused(
            capsys,
            [*GENERATE, "--out", str(tmp_path / "v.mp4"), "--preview", str(folder)],
            "--preview",
            words,
        )
    assert _hashes(tmp_path) == before and not (tmp_path / "v.mp4").exists()


# ------------------------------------------------------------------------- random files (hypothesis)

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _job_like(draw_options, draw_load, draw_rest) -> dict:
    """A job file's JSON near the valid shape: the right keys with random values, or random keys."""
    return {**HEAD, "id": "j", **draw_rest, "options": draw_options, "load": draw_load}


_OPTION_KEYS = st.sampled_from(
    ["seconds", "fps", "seed", "steps", "plan", "keyframes", "prompt", "cfg", "bogus"]
)
_JOB_FILES = _JSON | st.builds(
    _job_like,
    _JSON | st.dictionaries(_OPTION_KEYS, _JSON, max_size=3),
    _JSON | st.dictionaries(st.sampled_from(["device", "loras", "bucket"]), _JSON, max_size=2),
    st.dictionaries(
        st.sampled_from(["status", "position", "attempts", "id", "progress", "frames"]), _JSON, max_size=3
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_JOB_FILES)
def test_random_job_files_are_a_valid_job_or_a_one_line_reason(tmp_path, data):
    from framepack.queue import JobQueue
    from framepack.queue.store import read_job

    folder = tmp_path / "queue"
    folder.mkdir(exist_ok=True)
    path = folder / "j.json"
    path.write_text(json.dumps(data))
    try:
        job = read_job(path)
    except ValueError as err:
        assert str(err) and "\n" not in str(err)
        assert JobQueue(tmp_path).broken()[0].file == "j.json"
        return
    job.generation_options(tmp_path / "j.mp4")  # a valid job builds its options
    assert JobQueue(tmp_path).jobs()[0].id == "j"


_CONFIG_KEYS = st.sampled_from(
    ["seed", "model", "lr", "steps", "data", "layouts", "window", "codec", "ema_rampup"]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_JSON | st.dictionaries(_CONFIG_KEYS, _JSON, max_size=4))
def test_random_training_and_lora_configs_are_valid_or_refused_in_one_line(tmp_path, data):
    import argparse

    from framepack.cli.lora import TRAIN_FIELDS, train_config
    from framepack.train.config import load_config

    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    flags = {k: None for k in [*TRAIN_FIELDS, "layouts", "low_vram", "gradient_checkpointing"]}
    args = argparse.Namespace(**flags, config=str(path), out=str(tmp_path / "run"))
    for read in (lambda: load_config(path), lambda: train_config(args, None)):
        try:
            read()
        except UserError as err:
            assert str(err) and "\n" not in str(err) and str(path) in str(err)


@pytest.mark.parametrize(
    "claims",
    [{"section_boundaries": [10**40], "section_frames": 2}, {"section_frames": 1, "section_boundaries": list(range(1, 99999))},
     {"section_frames": 10**30, "latent_boundaries": [2**64]}],
)  # fmt: skip
def test_eval_drift_on_metadata_that_claims_impossible_sections(tmp_path, capsys, claims):
    from framepack.video import write_video

    write_video(tmp_path / "v.mp4", np.zeros((8, 16, 16, 3), np.uint8), 30, metadata=claims)
    assert main(["eval", "drift", str(tmp_path / "v.mp4")]) == 0
    assert "motion" in capsys.readouterr().out
