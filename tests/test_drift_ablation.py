"""scripts/drift_ablation.py: its scripts, cells and statistics (the study itself is docs/drift.md)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import drift_ablation as ablation

from framepack.data.world_script import camera_path, parse_script
from framepack.eval.revisit import revisit_pairs
from framepack.train.config import TrainConfig


@pytest.mark.parametrize("text", ablation.SCRIPTS)
def test_scripts_last_a_minute_return_home_and_revisit(text):
    script = parse_script(text)
    assert script.seconds == ablation.SECONDS
    frames = round(ablation.SECONDS * ablation.FPS)
    cams = camera_path(script, frames, ablation.FPS)
    assert (cams[0] == cams[-1]).all()  # ends where it began (the inverted plan's assumption)
    assert len(revisit_pairs(cams, 2 * ablation.FPS, ablation.SIZE, every=5)) > 100


def test_every_cell_uses_a_finetune_and_every_finetune_is_a_valid_config():
    import json

    base = json.loads(ablation.BASE_CONFIG.read_text())
    for changes in ablation.FINETUNES.values():
        TrainConfig.from_dict(base | changes)  # raises on a bad field
    assert {variant for variant, _, _ in ablation.CELLS.values()} <= set(ablation.FINETUNES)


def test_interval_is_the_t_interval():
    mean, half = ablation.interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-6)
    assert math.isnan(ablation.interval([5.0])[1])


def test_markdown_table_has_a_row_per_cell():
    row = {name: (1.0, 0.5) for name, _ in ablation.SUMMARY} | {"rollouts": 3}
    text = ablation.markdown_table({"a": row, "b": row})
    lines = text.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| a | 3 | 1 ± 0.5")
    assert np.all([line.count("|") == lines[0].count("|") for line in lines])
