"""End-to-end tests of `framepack train`: a run, refusal of a used directory, exact resume after
kill -9, finetuning with a new context level, export to a model bundle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from framepack.cli import main as cli_main
from framepack.errors import UserError
from framepack.model_bundle import load_bundle
from framepack.train.config import PRESETS
from framepack.train.loop import read_log, train

TINY = PRESETS["tiny-test"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "framepack", "train", *args, "--no-progress"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "tiny"
    subprocess.run(_cli("--preset", "tiny-test", "--out", str(run), "--steps", "9"), check=True)
    return run


def test_a_run_writes_config_log_plot_checkpoints_and_a_loadable_bundle(finished_run):
    rows = read_log(finished_run / "log.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 10))
    assert all(r["loss"] > 0 for r in rows) and rows[-1]["samples"] == 9 * TINY.batch_size
    config = json.loads((finished_run / "config.json").read_text())
    assert config["steps"] == 9 and config["window"] == TINY.window
    assert (finished_run / "loss.png").stat().st_size > 0
    assert sorted(p.name for p in (finished_run / "checkpoints").glob("*.json"))[-1] == "step-0000009.json"
    bundle = load_bundle(finished_run / "bundle")
    assert bundle.meta.window == TINY.window and bundle.meta.training["steps"] == 9
    # the bundle holds the EMA weights of the last checkpoint
    ema = load_file(str(finished_run / "checkpoints" / "step-0000009.safetensors"))
    assert torch.equal(bundle.transformer.proj_out.weight, ema["ema.transformer.proj_out.weight"])
    # and the modules run: one velocity prediction of the right shape
    h = TINY.data.size // bundle.codec.space_factor
    c = bundle.codec.latent_channels
    embeds = bundle.text_encoder.encode(["the camera pans left slowly"])
    with torch.no_grad():
        v = bundle.transformer(
            torch.randn(1, c, TINY.window, h, h),
            torch.tensor([500.0]),
            embeds.states,
            embeds.mask,
            embeds.pooled,
            torch.arange(1, 1 + TINY.window)[None],
        )
    assert v.shape == (1, c, TINY.window, h, h) and torch.isfinite(v).all()
    assert "pans" in bundle.text_encoder.vocab  # the vocabulary comes from the world's captions


def test_a_used_run_directory_is_refused_without_resume(finished_run, capsys):
    with pytest.raises(UserError, match="--resume"):
        train(TINY, finished_run, progress=False)
    assert cli_main(["train", "--preset", "tiny-test", "--out", str(finished_run)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_resume_after_kill_9_reproduces_the_losses_bit_for_bit(finished_run, tmp_path):
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli("--preset", "tiny-test", "--out", str(run), "--steps", "9"))
    marker = run / "checkpoints" / "step-0000003.json"
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    assert not (run / "bundle").exists()
    subprocess.run(_cli("--out", str(run), "--resume"), check=True)
    expected = [(r["step"], r["loss"]) for r in read_log(finished_run / "log.jsonl")]
    rows = read_log(run / "log.jsonl")
    assert [(r["step"], r["loss"]) for r in rows] == expected
    seconds = [r["seconds"] for r in rows]
    assert seconds == sorted(seconds)  # training seconds are summed over the two sessions


def test_finetune_from_a_run_adds_a_level_initialised_from_the_coarsest(finished_run, tmp_path):
    config = TINY.replace(schedule="released-f1:tail=grow", steps=2)
    path = tmp_path / "grow.json"
    path.write_text(json.dumps(config.to_dict()))
    with pytest.raises(UserError, match="--add-level 8,16,16"):
        train(config, tmp_path / "no-level", init=finished_run, progress=False)
    run = tmp_path / "finetune"
    assert cli_main(["train", "--config", str(path), "--out", str(run), "--init", str(finished_run),
                     "--add-level", "8,16,16", "--no-progress"]) == 0  # fmt: skip
    start = load_bundle(run / "model")  # the weights the finetune started from
    ema = load_file(str(finished_run / "checkpoints" / "step-0000009.safetensors"))
    proj_4x = ema["ema.transformer.clean_x_embedder.proj_4x.weight"]
    assert torch.equal(start.transformer.clean_x_embedder.proj_4x.weight, proj_4x)
    new = start.transformer.clean_x_embedder.proj_8x.weight
    expected = proj_4x.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4) / 8
    assert torch.allclose(new, expected)
    assert len(read_log(run / "log.jsonl")) == 2


def test_export_writes_the_latest_ema_in_half_precision(finished_run, tmp_path):
    out = tmp_path / "exported"
    assert (
        cli_main(["train", "--out", str(finished_run), "--export", str(out), "--export-dtype", "float16"])
        == 0
    )
    stored = load_file(str(out / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert stored["proj_out.weight"].dtype == torch.float16
    ema = load_file(str(finished_run / "checkpoints" / "step-0000009.safetensors"))
    assert torch.equal(stored["proj_out.weight"], ema["ema.transformer.proj_out.weight"].half())
    assert load_bundle(out).transformer.proj_out.weight.dtype == torch.float32  # loads as float32


def test_finetune_from_a_diffusers_transformer_folder(finished_run, tmp_path):
    run = tmp_path / "from-diffusers"
    folder = finished_run / "bundle" / "transformer"  # config.json + diffusion_pytorch_model.safetensors
    train(TINY.replace(steps=1), run, init=folder, progress=False)
    start = load_bundle(run / "model")
    stored = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    assert torch.equal(start.transformer.proj_out.weight, stored["proj_out.weight"])
    assert start.text_encoder.config.width == start.transformer.config.text_embed_dim
    with pytest.raises(UserError, match="not a run directory"):
        train(TINY, tmp_path / "nothing", init=tmp_path, progress=False)


def test_cli_train_refuses_bad_runs_and_configs(tmp_path, capsys):
    folder = tmp_path / "cfgdir"
    folder.mkdir()
    afile = tmp_path / "afile"
    afile.write_text("keep")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "schedule.json").write_text('{"schedule": "bogus"}')
    (tmp_path / "codec.json").write_text('{"codec": {"kind": "x"}}')
    cases = [
        (["--config", str(folder), "--out", str(tmp_path / "r")], "is a folder"),
        (["--config", str(tmp_path / "list.json"), "--out", str(tmp_path / "r")], "JSON object"),
        (
            ["--config", str(tmp_path / "schedule.json"), "--out", str(tmp_path / "r")],
            "schedule must be one of",
        ),
        (["--config", str(tmp_path / "codec.json"), "--out", str(tmp_path / "r")], "codec 'kind'"),
        (["--preset", "tiny-test", "--out", str(afile)], "is a file"),
        (["--out", str(tmp_path / "nothing"), "--resume"], "nothing to resume"),
    ]
    for argv, message in cases:
        assert cli_main(["train", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert afile.read_text() == "keep"
    assert not (tmp_path / "r").exists() and not (tmp_path / "nothing").exists()


def test_export_never_replaces_a_file_or_an_unasked_folder(finished_run, tmp_path, capsys):
    afile = tmp_path / "a.txt"
    afile.write_text("keep")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    base = ["train", "--out", str(finished_run), "--export"]
    assert cli_main([*base, str(afile)]) == 2 and afile.read_text() == "keep"
    assert "is a file" in capsys.readouterr().err
    assert cli_main([*base, str(folder)]) == 2 and (folder / "notes.txt").read_text() == "keep"
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main([*base, str(folder), "--overwrite"]) == 2  # not a bundle: never replaced
    assert (folder / "notes.txt").read_text() == "keep"
    bundle = tmp_path / "b"
    assert cli_main([*base, str(bundle)]) == 0
    assert cli_main([*base, str(bundle), "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b", "mine"]  # no litter


def test_a_run_killed_before_its_model_was_saved_resumes_from_its_own_config(finished_run, tmp_path):
    run = tmp_path / "early"
    run.mkdir()
    config = TINY.replace(steps=9)
    (run / "config.json").write_text(json.dumps(config.to_dict()))  # what a kill leaves: config only
    assert cli_main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    expected = [(r["step"], r["loss"]) for r in read_log(finished_run / "log.jsonl")]
    assert [(r["step"], r["loss"]) for r in read_log(run / "log.jsonl")] == expected


def test_resume_removes_what_a_kill_left_half_written(finished_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    litter = [run / "checkpoints" / "step-0000010.safetensors.tmp", run / ".config.json.123.0a1b2c3d.tmp"]
    for path in litter:
        path.write_bytes(b"half")
    (run / "notes.txt").write_text("mine")
    assert cli_main(["train", "--out", str(run), "--resume", "--steps", "10", "--no-progress"]) == 0
    assert not any(p.exists() for p in litter) and (run / "notes.txt").read_text() == "mine"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "damage, message",
    [
        ("flip", "checksum mismatch"),
        ("truncate", "checksum mismatch"),
        ("json", "cannot be read"),
    ],
)
def test_a_damaged_checkpoint_is_refused_in_one_line_and_kept(
    finished_run, tmp_path, capsys, damage, message
):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    latest = run / "checkpoints" / "step-0000009"
    tensors = latest.with_suffix(".safetensors")
    if damage == "flip":
        data = bytearray(tensors.read_bytes())
        data[-100] ^= 0xFF
        tensors.write_bytes(bytes(data))
    elif damage == "truncate":
        tensors.write_bytes(tensors.read_bytes()[:-1000])
    else:
        latest.with_suffix(".json").write_text('{"step": 9, "sha2')
    before = _snapshot(run)
    assert cli_main(["train", "--out", str(run), "--resume", "--steps", "12", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "step-0000009" in err and len(err.strip().splitlines()) == 1, err
    assert _snapshot(run) == before  # nothing rewritten, nothing deleted


def test_a_checkpoint_is_not_resumed_under_other_settings(finished_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "lr": config["lr"] * 2, "window": 3}))
    before = _snapshot(run)
    assert cli_main(["train", "--out", str(run), "--resume", "--steps", "12", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "lr:" in err and "window: 2 -> 3" in err, err
    assert len(err.strip().splitlines()) == 1 and _snapshot(run) == before


def test_a_short_try_of_a_long_recipe_keeps_its_cooldown_share(tmp_path, capsys):
    import argparse

    from framepack.cli.train import _resolve_config

    args = argparse.Namespace(
        out=tmp_path / "r", resume=False, preset="demo", config=None, steps=12, threads=None
    )
    config = _resolve_config(args)
    demo = PRESETS["demo"]
    assert config.steps == 12 and config.cooldown_steps == round(12 * demo.cooldown_steps / demo.steps)
    assert "cooldown shortened" in capsys.readouterr().out
