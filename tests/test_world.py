"""The procedural world: determinism, exact palette pixels, exact camera paths, captions, CLI."""

from __future__ import annotations

import json
from fractions import Fraction
from itertools import pairwise

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framepack.cli import main as cli_main
from framepack.data.world import OBJECT_COLOURS, PALETTE, World, WorldConfig, render_clip
from framepack.data.world_clips import SPLITS, WorldClips
from framepack.data.world_script import (
    Action,
    Script,
    camera_path,
    caption_at,
    caption_timeline,
    format_timeline,
    parse_script,
    random_script,
)

STATIC = WorldConfig(num_objects=0)


def _palette_ids(frames: np.ndarray) -> np.ndarray:
    """Palette index of every pixel; -1 where a pixel is not a palette colour."""
    match = (frames[..., None, :] == PALETTE).all(-1)  # (..., 16)
    return np.where(match.any(-1), match.argmax(-1), -1)


def test_same_seed_same_frames_different_seed_different_frames():
    a = render_clip(World(5), random_script(5, 2.0), size=32)
    b = render_clip(World(5), random_script(5, 2.0), size=32)
    c = render_clip(World(6), random_script(6, 2.0), size=32)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.truth == b.truth and a.captions == b.captions
    assert not np.array_equal(a.frames, c.frames)


def test_pixels_are_exact_palette_colours_and_objects_use_reserved_colours():
    clip = render_clip(World(1), random_script(1, 2.0), size=64)
    ids = _palette_ids(clip.frames)
    assert (ids >= 0).all()
    # The map never uses object colours, so object pixels appear exactly when an object is visible.
    big = World(1, STATIC).render((0, 0), 256, 256)
    assert not np.isin(_palette_ids(big), OBJECT_COLOURS).any()
    for f, truth in enumerate(clip.truth):
        shown = set(np.unique(ids[f])) & set(OBJECT_COLOURS)
        assert shown == {o["colour"] for o in truth["objects"] if o["visible"]}


def test_a_view_shows_several_structures():
    views = [World(s).render((0, 0), 64, 64) for s in range(8)]
    colours = [len(np.unique(_palette_ids(v))) for v in views]
    assert np.mean(colours) >= 3


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**40), x=st.integers(-(10**7), 10**7), y=st.integers(-(10**7), 10**7))
def test_map_is_a_function_of_world_coordinates(seed, x, y):
    world = World(seed, STATIC)
    direct = world.map_indices(np.arange(x, x + 40), np.arange(y, y + 24))
    np.testing.assert_array_equal(world.map_view(x, y, 24, 40), direct)  # tiles + cache
    # A window inside a larger window shows the same pixels.
    big = world.map_view(x - 13, y - 7, 64, 80)
    np.testing.assert_array_equal(big[7 : 7 + 24, 13 : 13 + 40], direct)


def test_camera_pans_by_speed_and_content_slides():
    script = parse_script("right 1 60, down 1 120, hold 0.5")  # 2 px/frame, then 4 px/frame
    clip = render_clip(World(3, STATIC), script, size=32, fps=30)
    cameras = np.array([t["camera"] for t in clip.truth])
    np.testing.assert_array_equal(cameras[:31, 0], 2 * np.arange(31))
    np.testing.assert_array_equal(cameras[30:61, 1], 4 * np.arange(31))
    assert (cameras[60:] == cameras[60]).all()
    np.testing.assert_array_equal(cameras, camera_path(script, len(cameras), 30))
    f = 10  # panning right: the content moves left by the step
    np.testing.assert_array_equal(clip.frames[f + 1][:, :-2], clip.frames[f][:, 2:])
    f = 40  # panning down: the content moves up
    np.testing.assert_array_equal(clip.frames[f + 1][:-4], clip.frames[f][4:])


@settings(max_examples=40, deadline=None)
@given(
    speed=st.integers(1, 200),
    frames=st.integers(1, 40),
    fps=st.sampled_from([24, 25, 30]),
    direction=st.sampled_from(["left", "right", "up", "down"]),
)
def test_return_scripts_come_back_to_the_same_pixels(speed, frames, fps, direction):
    out = Action(direction, frames / fps, speed)
    script = Script((out, out.reversed()), start=(7, -3))
    path = camera_path(script, 2 * frames + 1, fps)
    np.testing.assert_array_equal(path, path[::-1])  # t and 2T - t: same position
    assert tuple(path[0]) == tuple(path[-1]) == (7, -3)


def test_returning_script_rerenders_the_same_view():
    script = parse_script("right 2 slowly, left 2 slowly")
    fps = 24  # 2.5 px per frame: positions are rounded, the return is still exact
    clip = render_clip(World(9, STATIC), script, size=48, fps=fps, num_frames=4 * fps + 1)
    for u in range(2 * fps + 1):
        np.testing.assert_array_equal(clip.frames[2 * fps - u], clip.frames[2 * fps + u])
    moving = render_clip(World(9), script, size=48, fps=fps, num_frames=4 * fps + 1)
    assert moving.truth[0]["camera"] == moving.truth[-1]["camera"]
    assert moving.truth[0]["objects"] != moving.truth[-1]["objects"]  # objects moved on meanwhile


def test_objects_keep_identity_and_follow_their_velocity():
    config = WorldConfig(num_objects=4)
    world = World(11, config)
    clip = render_clip(world, random_script(11, 3.0), size=64, fps=30)
    ids = _palette_ids(clip.frames)
    first = clip.truth[0]["objects"]
    assert len({o["colour"] for o in first}) == 4  # one colour per object
    identity = [(o["id"], o["colour"], o["shape"], o["radius"], tuple(o["velocity"])) for o in first]
    for truth in clip.truth:
        objects = truth["objects"]
        assert [
            (o["id"], o["colour"], o["shape"], o["radius"], tuple(o["velocity"])) for o in objects
        ] == identity
        for obj, model in zip(objects, world.objects):
            t = Fraction(truth["frame"], 30)
            expected = [
                (int(np.floor(p + v * t + Fraction(1, 2)))) % config.object_period
                for p, v in zip(model.start, model.velocity)
            ]
            assert obj["position"] == expected
            sx, sy = obj["screen"]
            if 0 <= sx < 64 and 0 <= sy < 64:
                # The centre pixel shows the object unless a later-drawn object covers it.
                later = {o["colour"] for o in objects if o["id"] > obj["id"]}
                assert ids[truth["frame"], sy, sx] in {obj["colour"]} | later


def test_captions_follow_actions():
    script = parse_script("right 2 slowly, right 1 slowly, hold 1.5, up 1 quickly, left 0.5 100")
    timeline = caption_timeline(script)
    assert timeline == [
        (0.0, "the camera pans right slowly"),
        (3.0, "the camera holds still"),
        (4.5, "the camera pans up quickly"),
        (5.5, "the camera pans left steadily"),
    ]
    assert format_timeline(timeline) == (
        "0s: the camera pans right slowly; 3s: the camera holds still; "
        "4.5s: the camera pans up quickly; 5.5s: the camera pans left steadily"
    )
    assert caption_at(timeline, 2.99) == "the camera pans right slowly"
    assert caption_at(timeline, 3.0) == "the camera holds still"
    assert render_clip(World(0), script, size=16, fps=10).captions == timeline


@pytest.mark.parametrize("seed", range(6))
def test_random_scripts_are_deterministic_and_fill_the_duration(seed):
    a, b = random_script(seed, 7.0, 30), random_script(seed, 7.0, 30)
    assert a == b
    assert a.seconds == pytest.approx(7.0)
    assert a != random_script(seed + 100, 7.0, 30)


def test_random_scripts_sometimes_return():
    returns = 0
    for seed in range(30):
        actions = random_script(seed, 12.0, 30).actions
        returns += sum(b == a.reversed() for a, b in pairwise(actions) if a.direction != "hold")
    assert returns > 0


def test_scripts_without_holds_never_hold_and_the_default_stream_is_unchanged():
    import hashlib
    import json

    for seed in range(40):  # ~40% of default scripts start with holds; p_hold=0 has none
        actions = random_script(seed, 60.0, 30, p_hold=0).actions
        assert all(a.direction != "hold" for a in actions)
        assert random_script(seed, 60.0, 30, p_hold=0).seconds == pytest.approx(60.0)
    assert any(a.direction == "hold" for s in range(10) for a in random_script(s, 60.0, 30).actions)
    digest = hashlib.sha256()  # the default scripts (training and eval data) as before p_hold=0 existed
    for seed in range(300):
        digest.update(json.dumps(random_script(seed, 60, 30).to_json()).encode())
        digest.update(json.dumps(random_script(seed, 8, 30, speed_range=(20, 200)).to_json()).encode())
    assert digest.hexdigest() == "1bef54a155728386e246449e698a1610f35f60e5a74795b7d6493d7f0dd1a044"


def test_invalid_configs_and_scripts_raise():
    with pytest.raises(ValueError, match="num_objects"):
        WorldConfig(num_objects=len(OBJECT_COLOURS) + 1)
    with pytest.raises(ValueError, match="direction"):
        Action("sideways", 1.0)
    with pytest.raises(ValueError, match="seconds"):
        Action("left", 0.0)
    with pytest.raises(ValueError):
        parse_script("left")
    with pytest.raises(ValueError, match="split"):
        WorldClips(8, split="test")


def test_world_clips_items_are_deterministic_and_splits_disjoint():
    train = WorldClips(9, size=32, fps=15, length=50)
    item = train[3]
    assert item["pixels"].shape == (3, 9, 32, 32)
    assert item["pixels"].min() >= -1 and item["pixels"].max() <= 1
    assert (item["pixels"] == train[3]["pixels"]).all()
    assert not (item["pixels"] == train[4]["pixels"]).all()
    clip = train.clip(3)
    assert item["caption"] == caption_at(clip.captions, 8 / 15)
    assert item["timeline"] == format_timeline(clip.captions)
    evals = WorldClips(9, size=32, fps=15, length=50, split="eval")
    train_seeds = {train.clip_seed(i) for i in range(50)}
    eval_seeds = {evals.clip_seed(i) for i in range(50)}
    assert all(s in SPLITS["train"] for s in train_seeds) and all(s in SPLITS["eval"] for s in eval_seeds)
    assert SPLITS["train"].stop <= SPLITS["eval"].start
    assert WorldClips(9, size=32, fps=15, length=50, seed=1).clip_seed(3) != train.clip_seed(3)


def test_cli_writes_video_and_truth(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert (
        cli_main(
            ["world", "--seed", "4", "--seconds", "1.5", "--size", "32", "--fps", "20", "--out", str(out)]
        )
        == 0
    )
    truth = json.loads(out.with_suffix(".json").read_text())
    assert truth["num_frames"] == 30 and truth["size"] == [32, 32] and len(truth["frames"]) == 30
    expected = render_clip(World(4), random_script(4, 1.5, 20), size=32, fps=20)
    assert [f["camera"] for f in truth["frames"]] == [t["camera"] for t in expected.truth]
    assert truth["captions"] == [list(c) for c in expected.captions]
    assert Script.from_json(truth["script"]) == expected.script
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert container.streams.video[0].codec_context.name == "h264"
    assert len(frames) == 30 and frames[0].shape == (32, 32, 3)
    # Lossy, but close to the exact frames.
    assert np.abs(np.stack(frames).astype(int) - expected.frames.astype(int)).mean() < 8


def test_cli_explicit_script(tmp_path):
    out = tmp_path / "s.mp4"
    argv = [
        "world",
        "--seconds",
        "2",
        "--size",
        "16",
        "--script",
        "right 1 slowly, left 1 slowly",
        "--out",
        str(out),
    ]
    assert cli_main([*argv, "--start", "100", "5"]) == 0
    cameras = [f["camera"] for f in json.loads(out.with_suffix(".json").read_text())["frames"]]
    assert cameras[0] == [100, 5] and cameras[30] == [145, 5] and cameras[59] in ([101, 5], [102, 5])


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    argv = ["world", "--seconds", "0.5", "--size", "16", "--out", str(out)]
    assert cli_main(argv) == 0
    before = out.read_bytes()
    assert cli_main([*argv, "--seed", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert cli_main([*argv, "--seed", "1", "--overwrite"]) == 0
    assert out.read_bytes() != before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seconds", "0"], "--seconds"),
        (["--seconds", "-1"], "--seconds"),
        (["--size", "60"], "--size"),
        (["--size", "8"], "--size"),
        (["--size", "20000"], "to 1024"),
        (["--fps", "0"], "--fps"),
        (["--script", "sideways 2"], "--script"),
    ],
)
def test_cli_bad_values_exit_2(tmp_path, capsys, extra, message):
    out = tmp_path / "clip.mp4"
    assert cli_main(["world", "--seconds", "1", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_cli_unwritable_path_exit_2(tmp_path, capsys):
    assert cli_main(["world", "--seconds", "1", "--out", str(tmp_path / "missing" / "clip.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert cli_main(["world", "--seconds", "1", "--out", str(blocked / "clip.mp4")]) == 2


def test_captions_actions_and_prompted_velocity():
    from framepack.data.world_script import (
        all_captions,
        caption_action,
        content_velocity,
        prompted_velocity,
    )

    captions = all_captions()
    assert len(captions) == 13 and len(set(captions)) == 13
    for caption in captions:
        assert caption_action(caption).caption == caption
    assert caption_action("a cat") is None and caption_action("the camera pans sideways slowly") is None
    assert content_velocity(caption_action("the camera pans right quickly"), 30) == (-5.0, 0.0)
    assert content_velocity(caption_action("the camera pans up slowly"), 30) == (0.0, 1.5)
    v = prompted_velocity([(0.0, "the camera holds still"), (0.1, "the camera pans down steadily")], 6, 30)
    assert v[:4].tolist() == [[0, 0]] * 4 and v[4:].tolist() == [[0, -3]] * 2  # from frame 3 to 4 on
    assert np.isnan(prompted_velocity([(0.0, "hello")], 3, 30)[1:]).all()
