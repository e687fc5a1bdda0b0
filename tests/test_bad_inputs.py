"""Bad input through the real `framepack` command: every case must end with exit status 2, one
line on stderr, no traceback, and every file that existed before unchanged (a folder of sentinel
files: videos, sidecars, images, model folders, a training run, configs).

The table covers all subcommands; docs/errors.md lists what is refused and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from framepack.model_bundle import demo_path

ROOT = Path(__file__).resolve().parents[1]


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` pixels but holds one row of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 7))
        + chunk(b"IEND", b"")
    )


def _bundle_copy(target: Path, edit) -> None:
    shutil.copytree(demo_path(), target)
    edit(target)


def _edit_meta(**changes):
    def edit(bundle: Path) -> None:
        meta = json.loads((bundle / "framepack.json").read_text())
        (bundle / "framepack.json").write_text(json.dumps({**meta, **changes}))

    return edit


def _truncate(relative: str):
    def edit(bundle: Path) -> None:
        path = next(bundle.glob(relative))
        path.write_bytes(path.read_bytes()[:5000])

    return edit


def _run(ws: Path, *argv: str | bytes, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "framepack", *argv], cwd=ws, capture_output=True, env=env, timeout=timeout
    )


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """The sentinel folder every case runs in."""
    ws = tmp_path_factory.mktemp("ws")
    (ws / "keep.txt").write_text("keep")
    (ws / "text.txt").write_text("not an image")
    (ws / "folder").mkdir()
    (ws / "folder" / "inside.txt").write_text("keep")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
        ws / "img.png"
    )
    (ws / "bomb.png").write_bytes(_png_claiming(20000, 20000))
    (ws / "garbage.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    (ws / "taken.mp4").write_bytes(b"an earlier video")
    (ws / "notes.json").write_text('{"mine": true}')
    assert _run(ws, "world", "--seconds", "0.5", "--size", "16", "--out", "clip.mp4").returncode == 0
    _bundle_copy(ws / "model_list", lambda b: (b / "framepack.json").write_text("[1, 2]"))
    _bundle_copy(ws / "model_fps0", _edit_meta(fps=0))
    _bundle_copy(ws / "model_window", _edit_meta(window="two"))
    _bundle_copy(ws / "model_schedule", _edit_meta(schedule="spiral"))
    _bundle_copy(ws / "model_codec", lambda b: (b / "codec.json").write_text("{not json"))
    _bundle_copy(ws / "model_nocodec", lambda b: (b / "codec.json").unlink())
    _bundle_copy(ws / "model_weights", _truncate("transformer/*.safetensors"))
    _bundle_copy(ws / "model_noconfig", lambda b: (b / "transformer" / "config.json").unlink())
    configs = {
        "cfg_badjson.json": "{oops",
        "cfg_list.json": "[1, 2]",
        "cfg_schedule.json": json.dumps({"schedule": "bogus"}),
        "cfg_codec.json": json.dumps({"codec": {"kind": "x"}}),
        "cfg_field.json": json.dumps({"learning_rate": 0.1}),
        "cfg_data.json": json.dumps({"data": {"kind": "videos", "path": "no_such_clips"}}),
    }
    for name, text in configs.items():
        (ws / name).write_text(text)
    run = ["train", "--preset", "tiny-test", "--out", "run", "--no-progress"]
    assert _run(ws, *run, "--steps", "3").returncode == 0
    return ws


GEN = ("generate", "--seconds", "0.5", "--out", "new.mp4")

# (id, argv, a word the message must hold)
CASES: list[tuple[str, tuple[str | bytes, ...], str]] = [
    # generate: numbers
    ("seconds-zero", (*GEN[:1], "--seconds", "0", "--out", "new.mp4"), "--seconds"),
    ("seconds-negative", ("generate", "--seconds", "-3"), "--seconds"),
    ("seconds-nan", ("generate", "--seconds", "nan"), "--seconds"),
    ("seconds-text", ("generate", "--seconds", "ten"), "--seconds"),
    ("seconds-too-long", ("generate", "--seconds", "5000"), "hour"),
    ("seconds-under-a-frame", ("generate", "--seconds", "0.001", "--out", "new.mp4"), "one frame"),
    ("fps-1-short", ("generate", "--fps", "1", "--seconds", "0.4", "--out", "new.mp4"), "one frame"),
    ("fps-zero", ("generate", "--fps", "0"), "--fps"),
    ("steps-zero", (*GEN, "--steps", "0"), "--steps"),
    ("cfg-nan", (*GEN, "--cfg", "nan"), "--cfg"),
    ("cfg-inf", (*GEN, "--cfg", "inf"), "--cfg"),
    ("cfg-below-one", (*GEN, "--cfg", "0.5"), "--cfg"),
    ("cfg-rescale", (*GEN, "--cfg-rescale", "2"), "--cfg-rescale"),
    ("shift-inf", (*GEN, "--shift", "inf"), "--shift"),
    ("shift-zero", (*GEN, "--shift", "0"), "--shift"),
    ("guidance-nan", (*GEN, "--guidance", "nan"), "--guidance"),
    ("crf", (*GEN, "--crf", "99"), "--crf"),
    ("threads", (*GEN, "--threads", "0"), "--threads"),
    ("bucket", (*GEN, "--bucket", "3"), "--bucket"),
    ("plan", (*GEN, "--plan", "sideways"), "invalid choice"),
    ("sampler", (*GEN, "--sampler", "magic"), "invalid choice"),
    ("unknown-flag", (*GEN, "--colour", "red"), "unrecognized"),
    # generate: prompts
    ("prompts-syntax", (*GEN, "--prompts", "the camera pans"), "--prompts"),
    ("prompts-after-end", (*GEN, "--prompts", "0s: a; 9s: b"), "after the video ends"),
    (
        "prompts-same-latent",
        ("generate", "--seconds", "2", "--out", "new.mp4", "--prompts", "0s: a; 1s: b; 1.03s: c"),
        "same",
    ),
    ("prompt-not-utf8", (*GEN, "--prompt", b"the camera \xff pans"), "UTF-8"),
    # generate: images
    ("image-missing", (*GEN, "--image", "missing.png"), "no such file"),
    ("image-text", (*GEN, "--image", "text.txt"), "text.txt"),
    ("image-folder", (*GEN, "--image", "folder"), "folder"),
    ("image-bomb", (*GEN, "--image", "bomb.png"), "bomb.png"),
    ("end-image-missing", (*GEN, "--end-image", "missing.png"), "no such file"),
    ("no-image-and-image", (*GEN, "--no-image", "--image", "img.png"), "--no-image"),
    ("keyframe-syntax", (*GEN, "--keyframe", "img.png"), "TIME=PATH"),
    ("keyframe-time", (*GEN, "--keyframe", "abc=img.png"), "seconds"),
    ("keyframe-outside", (*GEN, "--keyframe", "9=img.png"), "outside"),
    (
        "keyframes-same-latent",
        (
            "generate",
            "--seconds",
            "2",
            "--out",
            "new.mp4",
            "--keyframe",
            "1=img.png",
            "--keyframe",
            "1.03=img.png",
        ),
        "same",
    ),
    ("extend-missing", (*GEN, "--extend", "missing.mp4"), "no such file"),
    ("extend-not-video", (*GEN, "--extend", "text.txt"), "text.txt"),
    ("extend-inverted", (*GEN, "--extend", "clip.mp4", "--plan", "inverted"), "--plan forward"),
    # generate: outputs
    ("out-exists", ("generate", "--seconds", "0.5", "--out", "taken.mp4"), "--overwrite"),
    ("out-sidecar-exists", ("generate", "--seconds", "0.5", "--out", "notes.mp4"), "notes.json"),
    ("out-not-video", ("generate", "--seconds", "0.5", "--out", "video.txt"), ".mp4"),
    ("out-folder", ("generate", "--seconds", "0.5", "--out", "folder"), "folder"),
    ("out-special-fs", ("generate", "--seconds", "0.5", "--out", "/proc/framepack.mp4"), "/proc"),
    ("preview-is-file", (*GEN, "--preview", "keep.txt"), "--preview"),
    ("resume-without-out", ("generate", "--resume"), "--out"),
    # generate: models and what they take
    ("model-missing", (*GEN, "--model", "no_such_model"), "no_such_model"),
    ("model-list", (*GEN, "--model", "model_list"), "framepack.json"),
    ("model-fps0", (*GEN, "--model", "model_fps0"), "fps"),
    ("model-window", (*GEN, "--model", "model_window"), "window"),
    ("model-schedule", (*GEN, "--model", "model_schedule"), "schedule"),
    ("model-codec", (*GEN, "--model", "model_codec"), "codec.json"),
    ("model-no-codec", (*GEN, "--model", "model_nocodec"), "codec.json"),
    ("model-weights", (*GEN, "--model", "model_weights"), "model_weights"),
    ("model-no-config", (*GEN, "--model", "model_noconfig"), "config.json"),
    ("hunyuan-no-dir", (*GEN, "--model", "hunyuan-f1", "--model-dir", "folder"), "folder"),
    ("lora-missing", (*GEN, "--lora", "missing.safetensors"), "missing.safetensors"),
    ("lora-garbage", (*GEN, "--lora", "garbage.safetensors"), "garbage.safetensors"),
    ("lora-scale", (*GEN, "--lora", "garbage.safetensors:big"), "scale"),
    ("teacache-demo", (*GEN, "--teacache", "0.15"), "--teacache"),
    ("low-vram-demo", (*GEN, "--low-vram"), "--low-vram"),
    ("device", (*GEN, "--device", "tpu"), "--device"),
    # pack-info
    (
        "pack-depth",
        ("pack-info", "--schedule", "geometric:lambda=2,depth=1000000", "--history", "9", "--latent", "8x8"),
        "depth",
    ),
    (
        "pack-duplicate",
        ("pack-info", "--schedule", "geometric:lambda=2,lambda=3", "--history", "9", "--latent", "8x8"),
        "lambda",
    ),
    (
        "pack-empty",
        ("pack-info", "--schedule", "geometric:", "--history", "9", "--latent", "8x8"),
        "geometric",
    ),
    ("pack-name", ("pack-info", "--schedule", "nonsense", "--history", "9", "--latent", "8x8"), "nonsense"),
    ("pack-history", ("pack-info", "--history", "-1", "--latent", "8x8"), "--history"),
    ("pack-latent", ("pack-info", "--history", "9", "--latent", "0x8"), "--latent"),
    # world
    ("world-size-huge", ("world", "--size", "20000", "--out", "w.mp4"), "--size"),
    ("world-size-small", ("world", "--size", "4", "--out", "w.mp4"), "--size"),
    ("world-seconds", ("world", "--seconds", "0", "--out", "w.mp4"), "--seconds"),
    ("world-fps", ("world", "--fps", "0", "--out", "w.mp4"), "--fps"),
    ("world-script", ("world", "--script", "sideways 2", "--out", "w.mp4"), "--script"),
    ("world-out-exists", ("world", "--seconds", "0.5", "--size", "16", "--out", "taken.mp4"), "--overwrite"),
    # train
    ("train-no-recipe", ("train", "--out", "r"), "--preset"),
    ("train-preset", ("train", "--preset", "nope", "--out", "r"), "nope"),
    ("train-steps", ("train", "--preset", "tiny-test", "--steps", "0", "--out", "r"), "--steps"),
    ("train-config-dir", ("train", "--config", "folder", "--out", "r"), "folder"),
    ("train-config-json", ("train", "--config", "cfg_badjson.json", "--out", "r"), "cfg_badjson.json"),
    ("train-config-list", ("train", "--config", "cfg_list.json", "--out", "r"), "JSON object"),
    ("train-config-schedule", ("train", "--config", "cfg_schedule.json", "--out", "r"), "schedule"),
    ("train-config-codec", ("train", "--config", "cfg_codec.json", "--out", "r"), "codec"),
    ("train-config-field", ("train", "--config", "cfg_field.json", "--out", "r"), "learning_rate"),
    ("train-data-missing", ("train", "--config", "cfg_data.json", "--out", "r"), "no_such_clips"),
    ("train-out-file", ("train", "--preset", "tiny-test", "--out", "keep.txt"), "is a file"),
    ("train-out-used", ("train", "--preset", "tiny-test", "--out", "run"), "--resume"),
    ("train-resume-nothing", ("train", "--out", "r", "--resume"), "nothing to resume"),
    ("train-resume-preset", ("train", "--out", "run", "--resume", "--preset", "tiny-test"), "--preset"),
    ("train-resume-init", ("train", "--out", "run", "--resume", "--init", "run"), "--init"),
    ("train-add-level", ("train", "--preset", "tiny-test", "--out", "r", "--add-level", "8,16,16"), "--init"),
    (
        "train-add-level-syntax",
        ("train", "--preset", "tiny-test", "--out", "r", "--add-level", "8x"),
        "kernel",
    ),
    ("train-init-missing", ("train", "--preset", "tiny-test", "--out", "r", "--init", "nothing"), "nothing"),
    ("train-threads", ("train", "--preset", "tiny-test", "--out", "r", "--threads", "0"), "--threads"),
    (
        "train-discretize-k",
        ("train", "--preset", "tiny-test", "--out", "r", "--discretize-history", "1"),
        "--discretize-history",
    ),
    (
        "train-discretize-over-sample",
        ("train", "--preset", "tiny-test", "--out", "r", "--discretize-history", "5000"),
        "latent vectors",
    ),
    (
        "train-released-lora",
        ("train", "--model", "hunyuan-inverted", "--data", "folder", "--lora-rank", "32", "--out", "r"),
        "framepack lora train",
    ),
    ("export-file", ("train", "--out", "run", "--export", "keep.txt"), "is a file"),
    ("export-folder", ("train", "--out", "run", "--export", "folder"), "--overwrite"),
    ("export-folder-overwrite", ("train", "--out", "run", "--export", "folder", "--overwrite"), "bundle"),
    ("export-nothing", ("train", "--out", "r", "--export", "b"), "r"),
    # distill
    (
        "distill-steps",
        ("distill", "--teacher", "run/bundle", "--out", "r", "--student-steps", "5"),
        "student_steps",
    ),
    ("distill-teacher", ("distill", "--teacher", "folder", "--out", "r"), "not a model bundle"),
    ("distill-nothing", ("distill", "--out", "r"), "say what to distil"),
    ("distill-resume", ("distill", "--out", "r", "--resume"), "nothing to resume"),
    ("distill-used-run", ("distill", "--teacher", "run/bundle", "--out", "run"), "not empty"),
    ("distill-released-cfg", ("distill", "--model", "hunyuan-f1", "--out", "r", "--cfg", "3"), "--cfg"),
    # ui, queue, lora
    ("ui-port", ("ui", "--port", "99999"), "--port"),
    ("ui-outputs-file", ("ui", "--outputs", "keep.txt"), "keep.txt"),
    ("queue-seconds", ("queue", "add", "--seconds", "0"), "--seconds"),
    ("queue-out", ("queue", "add", "--out", "x.mp4"), "--out"),
    ("queue-image", ("queue", "add", "--image", "text.txt"), "text.txt"),
    ("queue-cancel-unknown", ("queue", "cancel", "nosuchjob"), "nosuchjob"),
    ("queue-outputs-file", ("queue", "list", "--outputs", "keep.txt"), "keep.txt"),
    ("queue-action", ("queue", "explode"), "invalid choice"),
    ("lora-convert-args", ("lora", "convert", "missing.safetensors"), "--to"),
    ("lora-memory-bucket", ("lora", "memory", "--bucket", "3"), "16"),
    (
        "lora-train-model",
        ("lora", "train", "--cache", "missing", "--out", "l", "--model-dir", "folder"),
        "folder",
    ),
    # eval
    ("drift-missing", ("eval", "drift", "missing.mp4"), "missing.mp4"),
    ("drift-not-video", ("eval", "drift", "text.txt"), "text.txt"),
    ("drift-section", ("eval", "drift", "clip.mp4", "--section-frames", "0"), "--section-frames"),
    ("sheet-missing", ("eval", "sheet", "missing.mp4", "--out", "s.png"), "missing.mp4"),
    ("download-unknown-model", ("download", "hunyuan-x"), "hunyuan-x"),
    ("codec-eval-missing", ("codec", "eval", "no-such-codec"), "no-such-codec"),
    ("codec-train-missing-config", ("codec", "train", "--out", "r", "--config", "nope.json"), "nope.json"),
    ("codec-train-steps", ("codec", "train", "--out", "r", "--steps", "0"), "--steps"),
    ("codec-cache-missing-codec", ("codec", "cache", "--codec", "no-ae", "--out", "c"), "no-ae"),
    ("codec-cache-videos", ("codec", "cache", "--codec", "no-ae", "--out", "c", "--videos", "0"), "--videos"),
    ("sheet-out-exists", ("eval", "sheet", "clip.mp4", "--out", "img.png"), "--overwrite"),
    ("sheet-every", ("eval", "sheet", "clip.mp4", "--out", "s.png", "--every", "0"), "--every"),
    ("eval-nothing", ("eval",), "EVAL"),
    ("unknown-command", ("frobnicate",), "invalid choice"),
]


def _snapshot(ws: Path) -> dict[str, tuple[int, str]]:
    """Every file's size and content hash (big model files: size and modification time)."""
    out = {}
    for path in sorted(ws.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest = (
                hashlib.sha256(path.read_bytes()).hexdigest()
                if stat.st_size < 2**20
                else str(stat.st_mtime_ns)
            )
            out[str(path.relative_to(ws))] = (stat.st_size, digest)
        elif path.is_dir():
            out[str(path.relative_to(ws)) + "/"] = (0, "dir")
    return out


@pytest.mark.parametrize("argv, word", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(ws, argv, word):
    before = _snapshot(ws)
    result = _run(ws, *argv)
    err = result.stderr.decode("utf-8", "replace").strip()
    after = _snapshot(ws)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    for extra in set(after) - set(before):  # a case that wrote something: clean up for the next
        path = ws / extra.rstrip("/")
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    assert "Traceback" not in err, err
    assert result.returncode == 2, (result.returncode, err)
    assert len(err.splitlines()) == 1, err
    assert word.lower() in err.lower(), err
    assert not changed, changed


def test_the_table_covers_every_subcommand():
    from framepack.cli import COMMANDS

    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
    used = {c[1][0] for c in CASES}
    assert set(COMMANDS) <= used, set(COMMANDS) - used
