"""`framepack distill` on a tiny teacher bundle: known-answer targets, the student bundle and its
defaults in generation, exact resume after kill -9, self-rollout history equal to the student's
own generation, one-line refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from framepack.cli import main as cli_main
from framepack.distill.config import make_config
from framepack.distill.labels import Labeller, distill_generator
from framepack.distill.loop import load_teacher
from framepack.distill.targets import distill_pair, student_grid, teacher_interval
from framepack.model_bundle import load_bundle, load_meta, update_meta
from framepack.pipeline import FramePackPipeline
from framepack.train.components import Denoiser, schedule_of
from framepack.train.config import PRESETS, DataConfig
from framepack.train.data import WorldSource, draw_micro_batches
from framepack.train.loop import read_log, train

# 32x32 frames: the smallest start image `framepack generate` takes
TEACHER = PRESETS["tiny-test"].replace(
    data=DataConfig(size=32, clip_latents=6, num_clips=64, seconds=4.0), steps=4
)
DISTIL = ["--student-steps", "2", "--steps", "6", "--self-rollout", "0.5", "--no-progress"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A tiny trained bundle with CFG 2 and 8 UniPC steps as its defaults and an example image."""
    run = train(TEACHER, tmp_path_factory.mktemp("teacher") / "run", progress=False)
    bundle = run / "bundle"
    update_meta(bundle, cfg_scale=2.0, steps=8, default_prompt="the camera pans left slowly")
    frame = WorldSource(4.0, 32, 30, 0, 4).frames(0, [0])[0]  # (3, 1, 32, 32)
    pixels = ((frame[:, 0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    Image.fromarray(pixels).save(bundle / "example.png")
    return bundle


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "framepack", "distill", *args]


@pytest.fixture(scope="module")
def student_run(teacher, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("student") / "run"
    subprocess.run(_cli("--teacher", str(teacher), "--out", str(run), *DISTIL), check=True)
    return run


# ------------------------------------------------------------------------------ targets


@pytest.mark.parametrize("sampler", ["unipc", "euler"])
def test_the_target_of_a_fixed_x0_field_is_that_x0(sampler):
    """v = (x - x0) / sigma carries x straight to x0: the flow map's one step must land there."""
    x0 = torch.randn(2, 3, 2, 4, 4)
    noise = torch.randn_like(x0)
    grid = student_grid(2, 3.0)
    for interval in range(2):
        sigma = float(grid[interval])
        x = (1 - sigma) * x0 + sigma * noise
        pair_x0, pair_noise = distill_pair(
            lambda x, s: (x - x0) / s, x, grid, interval, teacher_interval(2, 4, 3.0, interval), sampler
        )
        assert torch.allclose(pair_x0, x0, atol=1e-5)
        assert torch.allclose((1 - sigma) * pair_x0 + sigma * pair_noise, x, atol=1e-5)


def test_the_teacher_intervals_tile_the_student_grid():
    grid = student_grid(4, 3.0)
    pieces = [teacher_interval(4, 6, 3.0, i) for i in range(4)]
    assert all(len(p) == 7 and p[0] == grid[i] and p[-1] == grid[i + 1] for i, p in enumerate(pieces))
    assert torch.equal(torch.cat([p[:-1] for p in pieces] + [pieces[-1][-1:]]), student_grid(24, 3.0))


def test_the_config_takes_the_teachers_settings(teacher):
    config = make_config(teacher, student_steps=3)
    assert config.teacher_steps == 9 and config.teacher_cfg == 2.0 and config.teacher_sampler == "unipc"
    assert config.window == TEACHER.window and config.data == TEACHER.data
    assert config.sampling_defaults() == {"steps": 3, "sampler": "euler", "cfg_scale": 1.0, "shift": 1.0}


# ------------------------------------------------------------------------------ the run


def test_the_student_is_a_bundle_that_generation_uses_with_its_defaults(student_run, tmp_path):
    meta = load_meta(student_run / "bundle")
    assert (meta.steps, meta.sampler, meta.cfg_scale) == (2, "euler", 1.0)
    assert (
        meta.default_prompt == "the camera pans left slowly"
        and (student_run / "bundle" / "example.png").is_file()
    )
    assert meta.model_card["teacher_cfg"] == 2.0 and meta.model_card["self_rollout"] == 0.5
    rows = read_log(student_run / "log.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 7)) and all(r["loss"] > 0 for r in rows)
    out = tmp_path / "v.mp4"
    assert cli_main(["generate", "--model", str(student_run / "bundle"), "--seconds", "0.5",
                     "--out", str(out)]) == 0  # fmt: skip
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert (sidecar["steps"], sidecar["sampler"], sidecar["cfg"]) == (2, "euler", 1.0)
    # one model call per step and section: no CFG pass
    pipe = FramePackPipeline.from_pretrained(str(student_run / "bundle"))
    calls = []
    real = pipe.components.transformer.forward
    pipe.components.transformer.forward = lambda *a, **k: calls.append(1) or real(*a, **k)
    result = pipe.generate(seconds=0.5, output_type="pt", progress=False)
    assert len(calls) == 2 * len(result.plan.sections)


def test_resume_after_kill_9_reproduces_the_losses_bit_for_bit(teacher, student_run, tmp_path):
    run = tmp_path / "killed"
    args = ["--teacher", str(teacher), "--out", str(run), *DISTIL]
    proc = subprocess.Popen(_cli(*args, "--config", str(_cadence(tmp_path))))
    marker = run / "checkpoints" / "step-0000003.json"
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL and not (run / "bundle").exists()
    subprocess.run(_cli("--out", str(run), "--resume", "--no-progress"), check=True)
    expected = [(r["step"], r["loss"]) for r in read_log(student_run / "log.jsonl")]
    assert [(r["step"], r["loss"]) for r in read_log(run / "log.jsonl")] == expected
    a = load_bundle(run / "bundle").transformer.state_dict()
    b = load_bundle(student_run / "bundle").transformer.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _cadence(folder: Path) -> Path:
    """A checkpoint every 3 steps (the uninterrupted run's checkpoints do not change its losses)."""
    path = folder / "cadence.json"
    path.write_text(json.dumps({"checkpoint_every": 3}))
    return path


# ------------------------------------------------------------------------------ self-rollout


def test_a_self_rollout_history_is_the_students_own_generation(teacher, student_run, tmp_path):
    config = make_config(teacher, student_steps=2, self_rollout=1.0)
    bundle = load_bundle(student_run / "bundle")
    student = Denoiser(bundle.transformer, bundle.text_encoder, config.prediction)
    source = WorldSource(
        config.data.seconds, config.data.size, config.data.fps, config.data.seed, config.data.num_clips
    )
    run = SimpleNamespace(source=source, codec=bundle.codec, model=student, codebook=None)
    labeller = Labeller(config, load_teacher(config))
    sample, rollout = labeller.rollout_sample(run, distill_generator(0, 0, 0, 0), 0)
    k, w = rollout.sections, config.window
    assert k >= 1 and sample.target_indices.tolist() == [list(range(1 + k * w, 1 + (k + 1) * w))]

    frame = source.frames(rollout.clip, [0])[0][:, 0]  # the true start frame, (3, H, W) in [-1, 1]
    pixels = ((frame.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    Image.fromarray(pixels).save(tmp_path / "start.png")
    pipe = FramePackPipeline.from_pretrained(str(student_run / "bundle"))
    result = pipe.generate(image=str(tmp_path / "start.png"), prompt=rollout.caption, seed=rollout.seed,
                           plan="forward", seconds=1.0, output_type="pt", progress=False)  # fmt: skip
    generated = result.latents[:, :, 1 : 1 + k * w]
    assert torch.equal(rollout.latents[:, :, 1 : 1 + k * w], generated)
    assert torch.equal(rollout.latents[:, :, :1], result.latents[:, :, :1])  # the same start latent
    # the sample's context holds that generated history, not the true frames
    true = run.source.frames(rollout.clip, list(range(1 + 4 * (k + 1) * w)))[0]
    truth = bundle.codec.encode(true[None])[:, :, 1 : 1 + k * w]
    assert not torch.allclose(truth, generated, atol=1e-3)
    latest = max(range(1, 1 + k * w))  # the nearest history frame sits in the finest level
    finest = sample.context.levels[-1]
    assert finest.indices[0, -1] == latest and torch.equal(finest.latents[0, :, -1], generated[0, :, -1])


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_a_labelled_step_noises_true_sections_or_rolls_out_every_sample(teacher, student_run, share):
    config = make_config(teacher, student_steps=2, self_rollout=share)
    bundle = load_bundle(student_run / "bundle")
    student = Denoiser(bundle.transformer, bundle.text_encoder, config.prediction)
    source = WorldSource(
        config.data.seconds, config.data.size, config.data.fps, config.data.seed, config.data.num_clips
    )
    run = SimpleNamespace(source=source, codec=bundle.codec, model=student, codebook=None,
                          env=SimpleNamespace(device=torch.device("cpu")))  # fmt: skip
    drawn = draw_micro_batches(config, source, bundle.codec, schedule_of(config), 5, 0)
    labeller = Labeller(config, load_teacher(config))
    labelled = labeller(run, drawn, 5)
    assert sum(len(mb.captions) for mb in labelled) == config.micro_batch
    assert len(labeller.rollouts) == (config.micro_batch if share else 0)
    for mb in labelled:
        sigma = float(mb.sigma[0])
        assert sigma in labeller.grid[:-1].tolist() and torch.all(mb.sigma == sigma)
    if not share:  # the pair's point at s_i is the true section noised to s_i
        mb, true = labelled[0], drawn[0]
        point = (1 - mb.sigma[0]) * mb.target + mb.sigma[0] * mb.noise
        assert torch.allclose(point, (1 - mb.sigma[0]) * true.target + mb.sigma[0] * true.noise, atol=1e-5)


# ------------------------------------------------------------------------------ refusals


def test_bad_input_is_refused_in_one_line_and_nothing_is_written(teacher, student_run, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    out = str(tmp_path / "r")
    cases = [
        (["--teacher", str(teacher), "--out", out, "--student-steps", "5"], "student_steps must be an integer from 1 to 4"),
        (["--teacher", str(teacher), "--out", out, "--student-steps", "2", "--teacher-steps", "3"], "multiple of student_steps"),
        (["--teacher", str(teacher), "--out", out, "--self-rollout", "1.5"], "self_rollout must be in [0, 1]"),
        (["--teacher", str(teacher), "--out", out, "--cfg", "0.5"], "teacher_cfg must be a number >= 1"),
        (["--teacher", str(tmp_path), "--out", out], "not a model bundle"),
        (["--teacher", str(student_run / "bundle"), "--out", out], "itself a distilled student"),
        (["--out", out], "say what to distil"),
        (["--out", out, "--resume"], "nothing to resume"),
        (["--teacher", str(teacher), "--out", str(afile)], "is a file"),
        (["--teacher", str(teacher), "--out", out, "--cache", "c"], "--cache applies to the released models"),
        (["--teacher", str(teacher), "--out", str(student_run)], "not empty"),
        (["--out", str(student_run), "--resume", "--student-steps", "3"], "only --steps and --threads"),
    ]  # fmt: skip
    for argv, message in cases:
        assert cli_main(["distill", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert afile.read_text() == "keep" and not (tmp_path / "r").exists()
