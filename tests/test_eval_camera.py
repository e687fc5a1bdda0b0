"""Camera motion by phase correlation, seam ratios and contact sheets: known answers and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from framepack.cli import main
from framepack.data.world_clips import WorldClips
from framepack.data.world_script import prompted_velocity
from framepack.eval.camera import following, global_shift, step_following
from framepack.eval.drift import drift_report, seam_ratio
from framepack.eval.metrics import motion
from framepack.eval.sheet import contact_sheet
from framepack.video import write_video


def _world_view(size: int = 96) -> np.ndarray:
    return WorldClips(1, size, 30, split="eval", length=1, seed=3).clip(0).frames[0]


@pytest.mark.parametrize(("dx", "dy"), [(0, 0), (3, 0), (-5, 2), (0, -8), (12, 7)])
def test_global_shift_finds_a_known_translation(dx, dy):
    big = _world_view(96)
    a = big[16:80, 16:80]
    b = big[16 - dy : 80 - dy, 16 - dx : 80 - dx]  # the picture moved by (dx, dy)
    mx, my, peak = global_shift(a, b)
    assert abs(mx - dx) < 0.5 and abs(my - dy) < 0.5
    assert peak > 0.2


def test_following_true_clip_matches_its_captions_and_not_the_opposite():
    clip = WorldClips(120, 64, 30, split="eval", length=4, seed=11).clip(2)
    velocity = prompted_velocity(clip.captions, 120, 30)
    result = following(clip.frames, velocity)
    assert result["pairs"] == 120 - result["gap"] and result["rate"] > 0.9
    moving = np.abs(velocity[1:]).sum() > 0
    if moving:  # a clip with a pan: the reversed prompt does not match where it pans
        assert following(clip.frames, -velocity)["rate"] < result["rate"]
    still = np.zeros_like(clip.frames[:20]) + clip.frames[:1]
    assert following(still, np.zeros((20, 2)))["rate"] == 1.0
    with pytest.raises(ValueError, match="more than gap"):
        following(still[:3], np.zeros((3, 2)))


def test_fast_pans_are_measured_over_shorter_gaps():
    from framepack.data.world import World, render_clip
    from framepack.data.world_script import parse_script

    script = parse_script("right 4 180")  # 6 px per frame (faster than any caption's speed)
    clip = render_clip(World(103), script, size=64, fps=30, num_frames=120)
    velocity = np.zeros((120, 2))
    velocity[1:, 0] = -6.0
    auto, four = following(clip.frames, velocity), following(clip.frames, velocity, gap=4)
    assert auto["gap"] == 2 and auto["rate"] > 0.95  # 12 px per pair
    assert four["rate"] < 0.9  # 24 of 64 px per pair: the windowed frames overlap too little


def _true_pan(index: int, direction: str, speed: float, frames: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """A held-out world's true clip of one caption from its script's start, and the prompted velocity."""
    from framepack.data.world import World, render_clip
    from framepack.data.world_script import Action, Script
    from framepack.train.data import WorldSource

    source = WorldSource(4.0, 64, 30, 7, 4, split="eval")
    action = Action(direction, 2.0, speed)
    world = World(source.dataset.clip_seed(index), source.dataset.config)
    clip = render_clip(world, Script((action,), source._script(index).start), 64, 30, frames)
    return clip.frames, prompted_velocity([(0.0, action.caption)], frames, 30)


@pytest.mark.parametrize("speed", ["slowly", "steadily", "quickly"])  # 1.5, 3 and 5 px per frame
def test_true_clips_follow_on_pairs_and_on_consecutive_frames_at_every_speed(speed):
    from framepack.data.world_script import SPEEDS

    pairs, steps = [], []
    for index in range(3):
        for direction in ("right", "down"):
            frames, velocity = _true_pan(index, direction, SPEEDS[speed])
            pairs.append(following(frames, velocity)["rate"])
            step = step_following(frames, velocity)
            assert step["gap"] == 1 and step["pairs"] == len(frames) - 1
            steps.append(step["rate"])
    assert np.mean(pairs) >= 0.9 and np.mean(steps) >= 0.95  # misses: objects on one-way land


def test_step_following_catches_a_picture_that_moves_once_per_latent():
    frames, velocity = _true_pan(0, "right", 90.0, frames=41)  # 3 px per frame
    stepped = frames[(np.arange(41) // 4) * 4]  # stands still 3 frames, then jumps 12 px
    assert following(stepped, velocity)["gap"] == 4
    assert following(stepped, velocity)["rate"] >= 0.9  # pairs 4 apart see the right sum
    assert step_following(frames, velocity)["rate"] >= 0.95
    assert step_following(stepped, velocity)["rate"] <= 0.05  # 0 or 12 px, never 3


def test_seam_ratio_known_values():
    change = np.array([1.0, 1.0, 1.0, 5.0, 1.0, 1.0, 1.0, 5.0])  # jumps into frames 4 and 8
    assert seam_ratio(change, [4, 8], eps=0) == 5.0
    assert seam_ratio(change, [2, 6], eps=0) == pytest.approx(1.0 / (14 / 6))
    with pytest.raises(ValueError):
        seam_ratio(change, [])


def test_drift_report_latent_seams():
    frames = np.repeat(_world_view(64)[None], 13, axis=0).copy()
    for f in range(1, 13):  # a 1-px drift inside latents, a 6-px jump into every 4th frame
        frames[f] = np.roll(frames[f - 1], 6 if f % 4 == 1 else 1, axis=1)
    report = drift_report(frames, 30, latent_boundaries=[1, 5, 9])
    assert report["latent_seams"]["ratio"] == pytest.approx(seam_ratio(motion(frames), [1, 5, 9]))
    assert report["latent_seams"]["ratio"] > 2


def test_contact_sheet_layout():
    video = np.stack([np.full((8, 8, 3), i * 10, np.uint8) for i in range(20)])
    sheet = contact_sheet([video, video[:5]], 10, every=5, columns=2, scale=3, names=["gen", "true"])
    # times 0, 5, 10, 15 in 2 rows of 2 columns; two videos per row; 24-px tiles
    assert sheet.size == (72 + 2 * 26, 2 * (12 + 2 * 26))
    pixels = np.asarray(sheet)
    assert (pixels[12 + 1, 72 + 1] == 0).all()  # frame 0 of the first video, top-left tile
    assert (pixels[12 + 26 + 1, 72 + 26 + 1] == 255).all()  # video 2 has no frame 5: blank
    with pytest.raises(ValueError):
        contact_sheet([video, video[:, :4]], 10)


def test_cli_sheet_writes_png_and_refuses_bad_input(tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", np.zeros((10, 16, 16, 3), np.uint8), 30)
    out = tmp_path / "s.png"
    assert (
        main(["eval", "sheet", str(video), str(video), "--out", str(out), "--every", "3", "--names", "a,b"])
        == 0
    )
    assert Image.open(out).size[0] > 0
    before = out.read_bytes()
    assert main(["eval", "sheet", str(video), "--out", str(out)]) == 2  # exists
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["eval", "sheet", str(video), "--out", str(tmp_path / "s.jpg")]) == 2
    assert main(["eval", "sheet", str(video), "--out", str(tmp_path / "t.png"), "--every", "0"]) == 2
    assert main(["eval", "sheet", str(video), "--out", str(tmp_path / "t.png"), "--names", "a,b"]) == 2
    assert "one per video" in capsys.readouterr().err
    assert main(["eval", "sheet", str(tmp_path / "none.mp4"), "--out", str(tmp_path / "t.png")]) == 2
