"""`framepack generate` through the CLI: a tiny model bundle saved in the test, and bad input."""

import json

import pytest

from framepack.cli import main
from framepack.model_bundle import BundleMeta, save_bundle
from framepack.video import read_metadata, read_video

from .pipeline_fixtures import tiny_components, write_image


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    c = tiny_components()
    meta = BundleMeta(
        fps=8,
        height=16,
        width=16,
        window=2,
        schedule="released-f1",
        default_plan="inverted",
        steps=2,
        shift=3.0,
        default_prompt="the camera pans right",
        training={"config": {"data": {"clip_latents": 8}}},
    )
    path = tmp_path_factory.mktemp("bundle") / "tiny"
    save_bundle(path, c.transformer, c.prompt_encoder, c.codec, meta)
    write_image(path / "example.png")
    return str(path)


def test_generate_default_example_image(bundle, tmp_path, capsys):
    out = tmp_path / "v.mp4"
    assert main(["generate", "--model", bundle, "--seconds", "1", "--out", str(out), "--quiet"]) == 0
    frames, fps = read_video(out)
    assert len(frames) == 8 and fps == 8
    meta = read_metadata(out)
    assert meta["prompts"] == "0s: the camera pans right"
    assert meta["image"].endswith("example.png")
    assert "8 frames" in capsys.readouterr().out


def test_generate_flags(bundle, tmp_path):
    image = write_image(tmp_path / "a.png", seed=2)
    end = write_image(tmp_path / "b.png", seed=3)
    out = tmp_path / "v.mp4"
    args = ["generate", "--model", bundle, "--image", image, "--end-image", end, "--seconds", "2"]
    args += ["--prompts", "0s: the camera pans right; 1s: the camera holds still", "--plan", "endpoints"]
    args += ["--seed", "7", "--steps", "2", "--out", str(out), "--quiet", "--sampler", "euler"]
    assert main(args) == 0
    sidecar = json.loads((tmp_path / "v.json").read_text())
    assert sidecar["seed"] == 7 and sidecar["plan"] == "endpoints" and sidecar["sampler"] == "euler"
    assert len(read_video(out)[0]) == 16


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seconds", "0"], "--seconds must be > 0"),
        (["--seconds", "-3"], "--seconds must be > 0"),
        (["--image", "missing.png"], "no such file"),
        (["--image", "NOTIMAGE"], "image"),
        (["--image", "TINY"], "at least 32 pixels"),
        (["--image", "WIDE"], "aspect ratio"),
        (["--prompts", "0s: a; 2 seconds: b"], "entry 2"),
        (["--keyframe", "5s=KEY"], "--keyframe at 5s (KEY): 5s is outside the video (0 to 2s)"),
        (["--keyframe", "1s=missing.png"], "--keyframe at 1s (missing.png): no such file"),
        (["--keyframe", "1s=TINY"], "--keyframe at 1s (TINY): image is 8x8"),
        (["--keyframe", "abc"], "TIME=PATH"),
        (["--model", "nonexistent-model"], "unknown model"),
        (["--out", "/nonexistent-dir/v.mp4"], "does not exist"),
        (["--resume", "--out", "VIDEO"], "nothing to resume"),  # a video exists: resume what?
        (["--extend", "VIDEO", "--plan", "inverted"], "--plan forward"),
        (["--lora", "missing.safetensors"], "no such file"),
        (["--lora", "NOTIMAGE:nan"], "finite number"),
        (["--lora", "NOTIMAGE"], "could not read LoRA"),
        (["--seconds", "0.001"], "shorter than one frame"),
        (["--prompt", "bad \udcff bytes"], "not valid UTF-8"),
        (["--cfg", "nan"], "--cfg must be a number"),
        (["--cfg", "inf"], "--cfg must be a number"),
        (["--shift", "inf"], "--shift must be a number"),
        (["--guidance", "nan"], "--guidance must be a number"),
        (["--prompts", "0s: a; 1s: b; 1.03s: c"], "same latent frame"),
        (["--keyframe", "1s=KEY", "--keyframe", "1.03s=KEY"], "same latent frame"),
    ],
)
def test_bad_input_exit_2_one_line(bundle, tmp_path, capsys, extra, message):
    from PIL import Image

    (tmp_path / "not.png").write_text("this is not an image")
    Image.new("RGB", (8, 8)).save(tmp_path / "tiny.png")
    Image.new("RGB", (400, 40)).save(tmp_path / "wide.png")
    key = write_image(tmp_path / "key.png")
    video = tmp_path / "in.mp4"
    video.write_bytes(b"")
    subst = {"NOTIMAGE": str(tmp_path / "not.png"), "TINY": str(tmp_path / "tiny.png")}
    subst |= {"WIDE": str(tmp_path / "wide.png"), "5s=KEY": f"5s={key}", "VIDEO": str(video)}
    subst |= {"1s=KEY": f"1s={key}", "1.03s=KEY": f"1.03s={key}"}
    message = message.replace("(KEY)", f"({key})").replace("(TINY)", f"({subst['TINY']})")
    subst |= {"1s=TINY": f"1s={subst['TINY']}"}
    extra = [subst.get(a, a) for a in extra]
    args = ["generate", "--model", bundle, "--seconds", "2", "--quiet", *extra]
    if "--out" not in extra:
        args += ["--out", str(tmp_path / "v.mp4")]
    if "--extend" in extra:
        write_image(tmp_path / "frame.png")
        import numpy as np

        from framepack.video import write_video

        write_video(video, np.zeros((5, 16, 16, 3), np.uint8), 8)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "v.mp4").exists()


def test_existing_output_untouched(bundle, tmp_path, capsys):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"precious")
    assert main(["generate", "--model", bundle, "--seconds", "1", "--out", str(out), "--quiet"]) == 2
    assert out.read_bytes() == b"precious"
    assert "--overwrite" in capsys.readouterr().err


def test_sigterm_keeps_work_and_resume_equals_uninterrupted(bundle, tmp_path, capsys):
    """A real process stopped by SIGTERM after its first section; the command its stop message
    prints (`--resume --out`, no other setting) finishes it, equal to an uninterrupted run; a
    typed flag that contradicts the stopped job's settings is refused in one line naming it."""
    import shlex
    import signal
    import subprocess
    import sys
    import time

    import numpy as np

    flags = ["--model", bundle, "--seconds", "6", "--seed", "5", "--prompt", "the camera holds still"]
    base = [sys.executable, "-m", "framepack", "generate", *flags, "--quiet"]
    stopped_out, full_out = tmp_path / "s.mp4", tmp_path / "f.mp4"
    proc = subprocess.Popen(
        [*base, "--out", str(stopped_out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    parts = tmp_path / "s.resume.safetensors.parts"
    deadline = time.time() + 120
    while not (parts.is_dir() and any(parts.iterdir())) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert stopped_out.exists() and (tmp_path / "s.resume.safetensors").exists()
    command = shlex.split(out.split("finish it with: ")[1])
    assert command == ["framepack", "generate", "--model", bundle, "--resume", "--out", str(stopped_out)]

    assert main([*command[1:], "--seconds", "5"]) == 2  # contradicts the job's 6 s: refused
    err = capsys.readouterr().err.strip()
    assert "--seconds 5 contradicts the job being resumed" in err and len(err.splitlines()) == 1, err
    assert main(command[1:]) == 0  # exactly the printed command
    assert main(["generate", *flags, "--quiet", "--out", str(full_out)]) == 0
    a, _ = read_video(stopped_out)
    b, _ = read_video(full_out)
    assert a.shape == b.shape == (48, 16, 16, 3)
    assert np.array_equal(a, b)
    assert not (tmp_path / "s.resume.safetensors").exists()
    assert json.loads((tmp_path / "s.json").read_text())["seed"] == 5


def test_lora_on_a_bundle_changes_the_video(bundle, tmp_path):
    import torch
    from safetensors.torch import save_file

    from framepack.model_bundle import load_bundle

    width = load_bundle(bundle).transformer.proj_out.weight.shape
    lora = tmp_path / "lora.safetensors"
    down, up = torch.randn(2, width[1]), torch.randn(width[0], 2)
    save_file({"transformer.proj_out.lora_A.weight": down, "transformer.proj_out.lora_B.weight": up}, lora)
    base = ["generate", "--model", bundle, "--seconds", "1", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a.mp4")]) == 0
    assert main([*base, "--out", str(tmp_path / "b.mp4"), "--lora", f"{lora}:0.5"]) == 0
    assert main([*base, "--out", str(tmp_path / "c.mp4"), "--lora", f"{lora}:0"]) == 0
    a, b, c = (read_video(tmp_path / f"{n}.mp4")[0] for n in "abc")
    assert (a != b).any() and (a == c).all()
    wrong = tmp_path / "wrong.safetensors"
    save_file({"transformer.nothing.lora_A.weight": down, "transformer.nothing.lora_B.weight": up}, wrong)
    assert main([*base, "--out", str(tmp_path / "d.mp4"), "--lora", str(wrong)]) == 2


@pytest.mark.parametrize("existing", ["v.json", "v.resume.safetensors", "v.resume.safetensors.parts"])
def test_every_file_of_the_job_is_checked_before_it_starts(bundle, tmp_path, capsys, existing):
    path = tmp_path / existing
    if existing.endswith(".parts"):
        path.mkdir()
        (path / "section_00000.safetensors").write_bytes(b"another job")
    else:
        path.write_bytes(b"another job")
    args = ["generate", "--model", bundle, "--seconds", "1", "--quiet", "--out", str(tmp_path / "v.mp4")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "v.mp4").exists()
    kept = path / "section_00000.safetensors" if path.is_dir() else path
    assert kept.read_bytes() == b"another job"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / "framepack.json").write_text("[1, 2]"), "JSON object"),
        (lambda p: _edit_meta(p, fps=0), "fps must be a positive number"),
        (lambda p: _edit_meta(p, window="two"), "window must be an integer"),
        (lambda p: _edit_meta(p, schedule="bogus"), "schedule must be one of"),
        (lambda p: (p / "codec.json").write_text("{not json"), "codec.json"),
        (lambda p: (p / "codec.json").unlink(), "codec.json"),
        (lambda p: (p / "transformer" / "config.json").unlink(), "missing or damaged"),
        (lambda p: _truncate(next((p / "transformer").glob("*.safetensors"))), "missing or damaged"),
    ],
)
def test_a_broken_model_folder_gets_one_line(bundle, tmp_path, capsys, damage, message):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    damage(broken)
    assert main(["generate", "--model", str(broken), "--seconds", "1", "--out", str(tmp_path / "v.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


def _edit_meta(path, **changes):
    meta = json.loads((path / "framepack.json").read_text())
    (path / "framepack.json").write_text(json.dumps({**meta, **changes}))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_queue_run_shows_progress(bundle, tmp_path, capsys):
    """`framepack queue run`: a line when a job starts and ends, and its progress (here, not a
    terminal: one line per section; on a terminal tqdm's bars)."""
    out = str(tmp_path / "out")
    assert main(["queue", "add", "--outputs", out, "--model", bundle, "--seconds", "2", "--steps", "1"]) == 0
    capsys.readouterr()
    assert main(["queue", "run", "--outputs", out]) == 0
    captured = capsys.readouterr()
    sections = [line for line in captured.err.splitlines() if " done in " in line]
    assert len(sections) >= 2 and sections[-1].endswith(f"({len(sections)}/{len(sections)} sections)")
    assert sections[0].startswith("section 1 of ")
    assert ": running (2s seed 31337  (the model's prompt))" in captured.out
    assert "done (16 frames)" in captured.out
    assert main(["queue", "run", "--outputs", out, "--quiet"]) == 0  # nothing waiting: nothing shown
    assert " done in " not in capsys.readouterr().err
