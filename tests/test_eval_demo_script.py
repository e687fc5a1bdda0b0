"""scripts/eval_demo.py's driving parts (the measures are tested in test_eval_continuation.py and
test_eval_camera.py): refusals, the benchmark report, the targets, the caption truth."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import eval_demo

from framepack.model_bundle import demo_path, load_bundle


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--parts", "captions,nope"], "unknown part(s) nope"),
        (["--caption-seconds", "0.2"], "at least 0.5"),
        (["--images", "0"], "--images must be at least 1"),
        (["--card", "/nonexistent/run"], "no log.jsonl"),
        (["--merge", "/nonexistent/report.json"], "no such report"),
        (["--bundle", "/nonexistent/bundle", "--parts", "sections"], "not a model bundle"),
    ],
)
def test_bad_arguments_are_one_line_errors(args, message, capsys):
    assert eval_demo.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bench_report_is_read_and_a_wrong_one_refused(tmp_path, capsys):
    good = tmp_path / "bench.json"
    good.write_text(
        json.dumps({"model": "B", "threads": 2, "10s": {"wall_s": [21.0, 20.0, 22.5], "median_s": 21.0}})
    )
    speed = eval_demo.read_bench(good)
    assert speed["wall_s"] == 21.0 and speed["threads"] == 2 and "median of 3 runs" in speed["source"]
    wrong = tmp_path / "flat.json"
    wrong.write_text(json.dumps({"mode": "flat", "60s": {"sections": 3}}))
    assert eval_demo.main(["--parts", "speed", "--bench", str(wrong)]) == 2
    assert "--mode budget --seconds 10" in capsys.readouterr().err


def test_targets_are_issue_20s_and_judged_both_ways():
    report = {
        "captions": {
            "following_rate_min": 0.95,
            "following_rate_consecutive_min": 0.5,
            "continuation_psnr_db": 26.0,
        },
        "minute": {"palette_deviation_max": 0.15, "sharpness_deviation_max": 0.2},
        "speed": {"wall_s": 31.0},
    }
    rows = {r["metric"]: r for r in eval_demo.target_rows(report)}
    assert rows["4a. following, pairs 4 frames apart, worst caption (share)"]["met"] is True
    consecutive = rows["4a. following, consecutive frames within 1 px/frame, worst caption (share)"]
    assert consecutive["met"] is False and consecutive["missed_by"] == pytest.approx(0.4)
    assert rows["4b. first 8 frames vs the true clip, pixels still in view (dB)"]["target"] == ">= 26.0"
    assert rows["4c. minute panning throughout: on-palette share, worst 6-s window vs true (rel. dev.)"][
        "met"
    ]
    assert rows["4c. minute: sharpness, worst 6-s window vs true (rel. dev.)"]["met"] is False
    assert rows["4e. a 10-s video, wall time (s)"]["met"] is False
    assert rows["4d. seams: change at latent boundaries / inside"]["measured"] is None  # part not run


def test_caption_truth_starts_at_the_start_frame_and_the_pixel_codec_reaches_its_ceiling():
    bundle = load_bundle(demo_path())
    source, starts = eval_demo.start_frames(bundle, 2, 7, 1.0)
    size = (bundle.meta.height, bundle.meta.width)
    truth, cameras = eval_demo.caption_truth(source, 1, "the camera pans up slowly", size, 30, 12)
    assert truth.shape == (12, *size, 3) and (truth[0] == starts[1]).all()
    assert (cameras[:, 0] == cameras[0, 0]).all() and list(np.diff(cameras[:5, 1])) in (
        [-2, -1, -2, -1],
        [-1, -2, -1, -2],
    )
    assert eval_demo.codec_continuation(bundle, truth, cameras) == math.inf  # the pixel codec is exact
