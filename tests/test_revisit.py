"""Revisit consistency (framepack.eval.revisit): pairs from an exact camera path, PSNR on them."""

from __future__ import annotations

import numpy as np
import pytest

from framepack.data.world import World, render_clip
from framepack.data.world_script import parse_script
from framepack.eval.revisit import revisit_pairs, revisit_psnr


def test_out_and_back_pairs_mirror_each_other():
    # right 1 s at 64 px/s then left 1 s: frame 30 + u shows what frame 30 - u showed
    cams = np.array([[min(f, 60 - f) * 2, 0] for f in range(61)])  # 2 px per frame
    pairs = revisit_pairs(cams, min_gap=10, away=32)
    assert pairs and all(a + b == 60 for a, b in pairs)
    # the camera must leave the view in between: within 16 px of the turn nothing pairs
    assert all(abs(cams[a] - cams[30]).max() >= 32 for a, _ in pairs)
    assert revisit_pairs(cams, min_gap=10, away=1000) == []


def test_holding_still_is_not_a_revisit():
    cams = np.zeros((100, 2), dtype=int)
    assert revisit_pairs(cams, min_gap=5, away=1) == []


def test_true_world_revisits_score_high_and_shuffled_frames_low():
    clip = render_clip(World(7), parse_script("hold 1, right 2, hold 1, left 2, hold 1"), 32, 30)
    cams = np.array([t["camera"] for t in clip.truth])
    pairs = revisit_pairs(cams, min_gap=30, away=32, every=3)
    assert len(pairs) > 5
    true = revisit_psnr(clip.frames, pairs)
    shuffled = clip.frames[np.random.default_rng(0).permutation(len(clip.frames))]
    assert true > 30 and revisit_psnr(shuffled, pairs) < true - 10
    assert np.isnan(revisit_psnr(clip.frames, []))


def test_bad_camera_shape():
    with pytest.raises(ValueError, match="cameras"):
        revisit_pairs(np.zeros(5), 1, 1)
