"""Strict JSON for evaluation reports (framepack.eval.metrics.report_json)."""

from __future__ import annotations

import json
import math

import pytest

from framepack.eval.metrics import read_report, report_json


def test_report_json_is_strict_and_round_trips():
    report = {"psnr": math.inf, "worst": -math.inf, "rows": [1.5, math.nan], "name": "x"}
    text = report_json(report)
    strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert strict == {"psnr": "inf", "worst": "-inf", "rows": [1.5, "nan"], "name": "x"}
    back = read_report(text)
    assert back["psnr"] == math.inf and back["worst"] == -math.inf and math.isnan(back["rows"][1])
    assert back["rows"][0] == 1.5 and back["name"] == "x"
