"""The page's requests without a browser: form -> options (the CLI's one-line messages), sidecar
settings -> form, what the page shows, the handler guard, and `framepack queue` from the shell."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from framepack.cli import main
from framepack.errors import UserError
from framepack.options import GenerationOptions
from framepack.queue import JobQueue, QueueJob
from framepack.ui import views
from framepack.ui.requests import (
    FORM,
    add_timeline_row,
    check_upload,
    form_from_settings,
    options_from_form,
    remove_timeline_row,
    rows_from_timeline,
)
from framepack.ui.uploads import UploadSweeper, clean_uploads, touch_uploads, upload_folder

TWO_ROWS = [[0, "the camera pans left"], [0.5, "it holds still"]]


def form(**values) -> dict:
    return {**dict.fromkeys(FORM), "seconds": 1, "seed": 7, **values}


def test_a_timeline_a_single_prompt_and_defaults(tmp_path):
    options = options_from_form(form(prompts=TWO_ROWS), tmp_path)
    assert options.prompts == "0s: the camera pans left\n0.5s: it holds still" and options.prompt is None
    assert options.timeline().entries == ((0.0, "the camera pans left"), (0.5, "it holds still"))
    # cells as the page may send them: text times, blank rows, a NaN time, a prompt over two lines
    sent = [["0", " the camera\npans left "], [None, ""], ["0.5s", "it holds still"], [float("nan"), None]]
    assert options_from_form(form(prompts=sent), tmp_path).prompts == options.prompts
    single = options_from_form(form(prompts=[[None, "  the camera pans left  "]]), tmp_path)
    assert (single.prompt, single.prompts) == ("the camera pans left", None)
    for blank in (None, [], [[]], [[None, ""]], [["", "  "]]):
        empty = options_from_form(form(prompts=blank, plan="model default", steps=None, cfg=None), tmp_path)
        assert (empty.prompt, empty.prompts, empty.plan, empty.steps, empty.cfg, empty.seed) == (
            (None, None, None, None, None, 7)
        )
    tiny = options_from_form(form(prompts=[[0, "a"], [0.00001, "b"]]), tmp_path)
    assert tiny.prompts == "0s: a\n0.00001s: b"  # no exponent, which the timeline syntax lacks


def test_empty_text_fields_mean_the_models_defaults(tmp_path):
    """The page's model-default fields are text boxes: empty (or blank) means the model's default
    in every one; typed numbers are read as the CLI reads them."""
    defaulted = ("steps", "fps", "shift", "guidance", "cfg", "cfg_rescale", "keyframe0_time")
    empty = options_from_form(form(**dict.fromkeys(defaulted, "")), tmp_path)
    assert (empty.steps, empty.fps, empty.shift, empty.guidance, empty.cfg) == (None,) * 5
    assert (empty.cfg_rescale, empty.keyframes) == (0.0, [])
    assert options_from_form(form(steps=" ", cfg="  "), tmp_path).steps is None
    typed = options_from_form(form(steps="12", fps="24", shift="2.5", cfg="1.5", cfg_rescale="0.7"), tmp_path)
    assert (typed.steps, typed.fps, typed.shift, typed.cfg, typed.cfg_rescale) == (12, 24, 2.5, 1.5, 0.7)
    with pytest.raises(UserError, match=r"^--steps must be between 1 and 1000, got 0$"):
        options_from_form(form(steps="0"), tmp_path)
    values, _ = form_from_settings({"steps": 6, "shift": None, "cfg": 1.0, "keyframes": []}, tmp_path)
    assert (values["steps"], values["shift"], values["cfg"], values["keyframe0_time"]) == ("6", "", "1", "")


@pytest.mark.parametrize(
    ("rows", "text"),
    [
        ([[0, "a"], [None, "b"]], "0s: a\nb"),
        ([[1, "a"], [0.5, "b"]], "1s: a\n0.5s: b"),
        ([[0, "a"], [0.5, ""]], "0s: a\n0.5s:"),
        ([[0, "a"], [5, "b"]], "0s: a\n5s: b"),
        ([[-1, "a"]], "-1s: a"),
    ],
)
def test_timeline_rows_get_the_cli_messages(tmp_path, capsys, rows, text):
    """The rows are refused with the very line `framepack queue add --prompts TEXT` prints."""
    assert main(["queue", "add", "--outputs", str(tmp_path), "--seconds", "2", f"--prompts={text}"]) == 2
    cli = capsys.readouterr().err.strip().removeprefix("framepack queue: error: ")
    assert cli.startswith("--prompts: ")
    with pytest.raises(UserError) as err:
        options_from_form(form(prompts=rows, seconds=2), tmp_path)
    assert str(err.value) == cli


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [[0, "a"], ["later", "b"]],
            "--prompts: prompt timeline entry 2 ('b'): the time 'later' is not a number of seconds",
        ),
        (
            [[0, "a"], [0.5, "b; c"]],
            "--prompts: prompt timeline entry 2 ('b; c'): ';' separates timeline entries; "
            "put each prompt in its own row",
        ),
    ],
)
def test_what_only_a_table_can_hold_gets_one_line(tmp_path, rows, message):
    with pytest.raises(UserError) as err:
        options_from_form(form(prompts=rows), tmp_path)
    assert str(err.value) == message


def test_timeline_rows_buttons_and_back(tmp_path):
    assert add_timeline_row([[None, ""]]) == [[None, ""], [0, ""]]
    assert add_timeline_row(TWO_ROWS) == [*TWO_ROWS, [1.5, ""]]
    assert add_timeline_row(None) == [[0, ""]]
    assert remove_timeline_row(TWO_ROWS) == TWO_ROWS[:1]
    assert remove_timeline_row(TWO_ROWS[:1]) == [[None, ""]]
    assert rows_from_timeline("0s: the camera pans left; 0.5s: it holds still") == TWO_ROWS
    assert rows_from_timeline("the camera pans left") == [[None, "the camera pans left"]]
    assert rows_from_timeline("") == rows_from_timeline(None) == [[None, ""]]


def test_random_seed_is_drawn_and_recorded(tmp_path):
    seeds = {options_from_form(form(random_seed=True, seed=7), tmp_path).seed for _ in range(4)}
    assert 7 not in seeds and len(seeds) > 1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"seconds": 0}, "--seconds must be > 0, got 0"),
        ({"seconds": -2}, "--seconds must be > 0, got -2"),
        ({"prompts": [[0, "a"], [None, "b"]]}, "--prompts: prompt timeline entry 2 ('b'): expected"),
        (
            {"prompts": [[0, "a"], [5, "b"]], "seconds": 2},
            "--prompts: entry at 5s starts after the video ends (2s)",
        ),
        ({"steps": 2.5}, "--steps must be a whole number, got 2.5"),
        ({"steps": 0}, "--steps must be between 1 and 1000, got 0"),
        ({"seed": 1.5}, "--seed must be a whole number, got 1.5"),
        ({"cfg": 0.5}, "--cfg must be a number >= 1 (1 turns real guidance off), got 0.5"),
        ({"plan": "sideways"}, "unknown plan 'sideways'; choose one of: forward, inverted"),
        ({"keyframe0_time": 0.5}, "--keyframe: keyframe 1 has a time but no image"),
        ({"extend": "../elsewhere.mp4"}, "--extend: no video '../elsewhere.mp4' in the outputs folder"),
        ({"extend": "missing.mp4"}, "--extend: no video 'missing.mp4' in the outputs folder"),
    ],
)
def test_bad_input_gets_one_line(tmp_path, values, message):
    with pytest.raises(UserError) as err:
        options_from_form(form(**values), tmp_path)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_keyframes_and_images(tmp_path):
    image = tmp_path / "k.png"
    Image.new("RGB", (64, 64)).save(image)
    with pytest.raises(UserError, match="keyframe 2 has an image but no time"):
        options_from_form(form(keyframe1_image=str(image)), tmp_path)
    options = options_from_form(
        form(keyframe0_time=0.5, keyframe0_image=str(image), image=str(image)), tmp_path
    )
    assert options.keyframes == [(0.5, str(image))] and options.image == str(image)
    text = options_from_form(form(no_image=True, image=str(image)), tmp_path)
    assert (text.image, text.no_image) == (None, True)


def test_uploads_are_checked_as_the_queue_will(tmp_path):
    good = tmp_path / "good.webp"
    Image.new("RGB", (64, 48)).save(good)
    assert check_upload(str(good), "image") == str(good)
    assert check_upload(None, "end_image") is None  # a cleared image
    (tmp_path / "notes.png").write_text("not an image")
    Image.new("RGB", (64, 64)).save(tmp_path / "a.gif")
    Image.new("RGB", (400, 40)).save(tmp_path / "wide.png")
    for path, name, message in [
        (
            "notes.png",
            "image",
            "--image: cannot read notes.png as an image; give a PNG, JPEG, WebP or BMP file",
        ),
        ("a.gif", "end_image", "--end-image: a.gif is a GIF image; give a PNG, JPEG, WebP or BMP file"),
        ("wide.png", "keyframe1_image", "--keyframe (keyframe 2): image is 400x40, an aspect ratio over 4:1"),
    ]:
        with pytest.raises(UserError) as err:
            check_upload(str(tmp_path / path), name)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda out: options_from_form([1, 2], out), "malformed request: expected the form's fields by name"),
        (lambda out: options_from_form(form(seconds=[1]), out), "--seconds must be a number, got list [1]"),
        (lambda out: options_from_form(form(seconds=True), out), "--seconds must be a number, got bool"),
        (lambda out: options_from_form(form(seed={"a": 1}), out), "--seed must be a number, got dict"),
        (lambda out: options_from_form(form(negative_prompt=5), out), "--negative-prompt must be text, got int"),
        (lambda out: options_from_form(form(image=123), out), "--image must be the path of an uploaded image"),
        (lambda out: options_from_form(form(end_image=["a"]), out), "--end-image must be the path of an"),
        (lambda out: options_from_form(form(plan=["forward"]), out), "--plan must be text, got list"),
        (lambda out: options_from_form(form(sampler=3), out), "--sampler must be text, got int"),
        (lambda out: options_from_form(form(extend=7), out), "--extend must be text, got int"),
        (lambda out: options_from_form(form(prompts="0s: a"), out), "--prompts: malformed timeline str"),
        (lambda out: options_from_form(form(prompts=[5]), out), "--prompts: malformed timeline list"),
        (lambda out: options_from_form(form(keyframe0_time=[1], keyframe0_image=3), out), "(keyframe 1) must be"),
        (lambda out: add_timeline_row(7), "--prompts: malformed timeline int"),
        (lambda out: remove_timeline_row([[0, "a"], "b"]), "--prompts: malformed timeline list"),
        (lambda out: rows_from_timeline(["a"]), "--prompts must be text, got list"),
        (lambda out: check_upload(5, "image"), "--image must be the path of an uploaded image, got int 5"),
        (lambda out: check_upload("x.png", "photo"), "malformed request: 'photo' is not an image of the form"),
        (lambda out: form_from_settings([1], out), "malformed settings: expected a mapping, got list"),
        (lambda out: form_from_settings({"keyframes": [[1]]}, out), "keyframes must be [seconds, path] pairs"),
        (lambda out: form_from_settings({"keyframes": "a"}, out), "keyframes must be [seconds, path] pairs"),
    ],
)  # fmt: skip
def test_malformed_requests_get_one_line(tmp_path, call, message):
    """What a web API call can send that the page never does: wrong types, a form that is not
    one. Each is one line (the handler guard shows it), never an internal error."""
    with pytest.raises(UserError) as err:
        call(tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_fields_left_out_are_empty_ones(tmp_path):
    options = options_from_form({}, tmp_path)  # every field missing: the model's defaults
    assert (options.seconds, options.seed, options.image, options.prompt, options.plan) == (
        5.0, 31337, None, None, None
    )  # fmt: skip
    rows = {"headers": ["time (s)", "prompt"], "data": TWO_ROWS}  # Gradio's own table payload
    assert (
        options_from_form(form(prompts=rows), tmp_path).prompts
        == "0s: the camera pans left\n0.5s: it holds still"
    )
    values, _ = form_from_settings({"prompts": 3, "image": 5}, tmp_path)
    assert values["prompts"] == [[None, ""]] and values["image"] is None


def _upload(folder: Path, name: str) -> Path:
    """A file as Gradio stores an upload: `<upload folder>/<hash>/<name>`."""
    path = folder / os.urandom(4).hex() / name
    path.parent.mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 30, 30)).save(path)
    return path


def test_uploads_no_job_needs_are_cleaned_up(tmp_path):
    q = JobQueue(tmp_path)
    folder = upload_folder(tmp_path)
    queued, abandoned, named = (_upload(folder, f"{n}.png") for n in ("queued", "abandoned", "named"))
    job = q.add(GenerationOptions(image=str(queued), seconds=1))  # the job copies its image
    done = q.add(GenerationOptions(end_image=str(queued), seconds=1))
    q.update(done.id, lambda j: setattr(j, "status", "done"))
    cancelled = q.add(GenerationOptions(image=str(queued), seconds=1))
    q.cancel(cancelled.id)
    legacy = QueueJob("legacy", {"image": str(named), "seconds": 1.0}, created="2025-01-01T00:00:00")
    q.write(legacy)  # a job (an older version's) that names an upload itself
    orphan = q.inputs / "20250101-000000-dead-image.png"  # a queue add killed before its job file
    orphan.write_bytes(queued.read_bytes())
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert clean_uploads(q) == [] and sorted(p for p in tmp_path.rglob("*") if p.is_file()) == before
    assert UploadSweeper(q).maybe() == []  # the server cleaned as it started; the next in a minute

    removed = clean_uploads(q, now=time.time() + 86401)  # a day later: no form used them since
    assert sorted(removed) == sorted([queued, abandoned, orphan])
    assert named.is_file() and not queued.parent.exists() and folder.is_dir()
    for kept in (job, done, cancelled):  # every job's own copies stay (run, retry, load settings)
        options = q.get(kept.id).options
        assert Path(options.get("image") or options["end_image"]).is_file()

    used, left = _upload(folder, "used.png"), _upload(folder, "left.png")
    time.sleep(1.1)
    touch_uploads([str(used), None, 5, str(tmp_path / "elsewhere.png")], tmp_path)  # a form queued it
    assert clean_uploads(q, keep=1.0) == [left] and used.is_file()
    assert clean_uploads(q, keep=0) == [used] and named.is_file()  # at start: all no job names


def test_the_ui_command_cleans_uploads_when_it_starts(tmp_path, monkeypatch, capsys):
    import framepack.cli.ui

    q = JobQueue(tmp_path)
    stale = _upload(upload_folder(tmp_path), "stale.png")
    job = q.add(GenerationOptions(image=str(stale), seconds=1))
    q.cancel(job.id)  # nothing for the server's worker to run
    served = []
    monkeypatch.setattr(framepack.cli.ui, "_serve", lambda *args: served.append(args))
    assert main(["ui", "--outputs", str(tmp_path), "--threads", "1"]) == 0 and served
    assert not stale.exists() and list(upload_folder(tmp_path).iterdir()) == []
    assert Path(q.get(job.id).options["image"]).is_file()  # the job's copy stays (retry resumes)


def test_the_queued_message_says_when_the_job_starts(tmp_path):
    q = JobQueue(tmp_path)
    first = q.add(options_from_form(form(prompts=[[None, "first"]]), tmp_path))
    later = q.add(options_from_form(form(prompts=[[None, "later"]]), tmp_path))
    assert views.queued_message(q, later, now=False, worker_state="idle") == (
        f"Queued **{later.id}** (number 2 in the queue), seed 7."
    )
    now = q.add(options_from_form(form(prompts=[[None, "now"]]), tmp_path), front=True)
    assert views.queued_message(q, now, now=True, worker_state="idle") == f"**{now.id}** starts now, seed 7."
    assert "another process (pid" in views.queued_message(
        q, now, now=True, worker_state="waiting: another worker (pid 12) runs this queue"
    )
    q.update(first.id, lambda j: setattr(j, "status", "running"))
    assert views.queued_message(q, now, now=True, worker_state=f"running {first.id}") == (
        f"**{now.id}** is first in the queue, seed 7: it starts when **{first.id}** (running) ends; "
        "one job runs at a time, so stop that one to start this sooner."
    )
    q.update(now.id, lambda j: setattr(j, "status", "running"))  # the worker took it at once
    q.update(first.id, lambda j: setattr(j, "status", "queued"))
    assert views.queued_message(q, now, now=True, worker_state="idle").endswith("starts now, seed 7.")


def test_load_these_settings_round_trip(tmp_path):
    kept = tmp_path / "queue" / "inputs"
    kept.mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(kept / "a-image.png")
    (tmp_path / "old.mp4").write_bytes(b"")
    settings = {
        "prompts": "0s: the camera pans left; 0.5s: it holds still",
        "image": str(kept / "a-image.png"),
        "end_image": "/somewhere/else.png",
        "keyframes": [],
        "extend": str(tmp_path / "old.mp4"),
        "seconds": 1.0,
        "seed": 9,
        "steps": 6,
        "plan": "forward",
        "sampler": "euler",
        "cfg": 1.0,
    }
    values, notes = form_from_settings(settings, tmp_path)
    assert values["prompts"] == TWO_ROWS  # the timeline editor's rows
    assert values["image"] == str(kept / "a-image.png") and values["end_image"] is None
    assert values["extend"] == "old.mp4" and values["seed"] == 9 and values["sampler"] == "euler"
    assert notes == ["the end image else.png is outside the outputs folder; upload it again"]
    options = options_from_form({**values, "end_image": None, "extend": None}, tmp_path)
    assert (options.seconds, options.seed, options.steps, options.plan) == (1.0, 9, 6, "forward")
    assert options.prompts == "0s: the camera pans left\n0.5s: it holds still"
    example, _ = form_from_settings({"image": "/pkg/example.png"}, tmp_path, example_image="/pkg/example.png")
    assert (example["image"], example["no_image"]) == (None, False)  # the model's example: an empty image


def test_views_show_progress_queue_and_gallery(tmp_path):
    q = JobQueue(tmp_path)
    job = QueueJob("j1", {"prompt": "a <b>", "seconds": 1.0, "seed": 3}, status="running", created="x")
    job.progress = {"section": 2, "sections": 4, "step": 5, "steps": 10, "fraction": 0.375}
    q.write(job)
    html = views.progress_html(job, "idle")
    assert "section 2 of 4, step 5 of 10" in html and 'value="0.375"' in html and "a &lt;b&gt;" in html
    assert views.queue_rows(q) == [["j1", "running", "38%", 1.0, 3, "a <b>", ""]]
    assert "No job is running (idle)" in views.progress_html(None, "idle")
    (tmp_path / "done.mp4").write_bytes(b"")
    (tmp_path / "done.json").write_text(
        json.dumps({"complete": True, "prompts": "0s: x", "seconds": 1, "seed": 2})
    )
    (tmp_path / "half.mp4").write_bytes(b"")
    (tmp_path / "half.json").write_text(json.dumps({"complete": False}))
    assert views.video_choices(tmp_path) == [("done · x · 1s · seed 2", "done.mp4")]


def test_handlers_never_show_a_traceback():
    from framepack.ui.app import _guard

    message = object()

    def user_error():
        raise UserError("--seconds must be > 0, got 0")

    def bug():
        raise KeyError("x")

    assert _guard(message, user_error)() == {message: "⚠ --seconds must be > 0, got 0"}
    assert _guard(message, bug)() == {
        message: "⚠ internal error (KeyError); the server's log has the details"
    }


def test_queue_cli_without_a_browser(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["queue", "add", "--outputs", out, "--seconds", "1", "--prompts", "0s: a; 0.5s: b"]) == 0
    assert main(["queue", "add", "--outputs", out, "--seconds", "1", "--seed", "4", "--front"]) == 0
    assert main(["queue", "add", "--outputs", out, "--seconds", "0"]) == 2
    assert main(["queue", "add", "--outputs", out, "--out", "x.mp4"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "framepack queue: error: --seconds must be > 0, got 0",
        "framepack queue: error: --out: the queue chooses this itself (<outputs>/<job id>.mp4)",
    ]
    first, second = JobQueue(out).jobs()
    assert first.options["seed"] == 4 and second.prompt == "0s: a; 0.5s: b"
    assert main(["queue", "move", second.id, "--by", "-1", "--outputs", out]) == 0
    assert main(["queue", "cancel", first.id, "--outputs", out]) == 0
    page = options_from_form(form(prompts=TWO_ROWS), tmp_path)  # the page's timeline: two lines
    third = JobQueue(out).add(page)
    capsys.readouterr()
    assert main(["queue", "list", "--outputs", out]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # one line per job
    assert lines[0].startswith(f"{second.id}  queued") and lines[1].startswith(f"{first.id}  cancelled")
    assert lines[2] == f"{third.id}  queued          1s seed 7  0s: the camera pans left; 0.5s: it hold…"
    assert main(["queue", "retry", "nope", "--outputs", out]) == 2
    assert "no job 'nope'" in capsys.readouterr().err
