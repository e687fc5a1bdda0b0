"""The bundled demo model (framepack/assets/demo): it loads from the installed package, its
card describes this bundle and the preset that trains it, and it generates a short video."""

from __future__ import annotations

import json
from pathlib import Path

from framepack.cli import main
from framepack.model_bundle import demo_path, load_bundle
from framepack.train.config import PRESETS
from framepack.video import read_video

ROOT = Path(__file__).resolve().parents[1]


def test_demo_bundle_is_small_and_matches_the_demo_preset():
    path = demo_path()
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size <= 25_000_000  # the limit for package data
    bundle = load_bundle(path)
    trained = bundle.meta.training["config"]
    # the shipped weights: the demo preset, then the whole-token finetune of configs/ (docs/training.md)
    recipe = json.loads((ROOT / "configs" / "demo-whole-token.json").read_text())
    assert trained == recipe
    preset = json.loads(json.dumps(PRESETS["demo"].to_dict()))  # json turns tuples into lists
    finetune = {"lr", "cooldown_steps"}
    assert {k: v for k, v in recipe.items() if k not in finetune} == {
        k: v for k, v in preset.items() if k not in finetune
    }
    assert bundle.meta.training["steps"] == preset["steps"]
    assert bundle.meta.window == preset["window"]
    assert bundle.codec.space_factor == preset["codec"]["space_factor"]
    assert (path / "example.png").is_file() and (path / "README.md").is_file()
    card = bundle.meta.model_card
    assert card["steps"] == preset["steps"] and card["bundle_mb"] <= 25


def test_demo_generates_a_short_video(tmp_path):
    out = tmp_path / "demo.mp4"
    assert main(["generate", "--seconds", "0.5", "--steps", "2", "--out", str(out), "--quiet"]) == 0
    frames, fps = read_video(out)
    assert len(frames) == 15 and fps == 30
    assert frames.shape[1:3] == (64, 64)  # the minimum frame size
