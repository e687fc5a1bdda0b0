"""Tests for `framepack pack-info` through the dispatcher (output and exit codes)."""

from __future__ import annotations

import json

import pytest

from framepack.cli import main
from framepack.packing import SCHEDULES, get_schedule, parse_schedule


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["pack-info", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_released_table_at_64x64(capsys) -> None:
    code, out, err = _run(capsys, "--history", "19", "--latent", "64x64")
    assert code == 0 and err == ""
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["4x"][1:4] == ["(4,8,8)", "16", str(4 * 8 * 8)]
    assert rows["2x"][1:4] == ["(2,4,4)", "2", str(1 * 16 * 16)]
    assert rows["1x"][1:4] == ["(1,2,2)", "2", str(2 * 32 * 32)]
    assert rows["context"][1] == str(256 + 256 + 2048)
    assert rows["noisy"][1:4] == ["(1,2,2)", "9", str(9 * 32 * 32)]
    assert rows["total"][1] == str(2560 + 9216)


def test_json_matches_the_library(capsys) -> None:
    spec = "geometric:lambda=1.5,depth=4,tail=pool"
    code, out, _ = _run(capsys, "--schedule", spec, "--history", "500", "--latent", "48x80", "--json")
    assert code == 0
    info = json.loads(out)
    sched = parse_schedule(spec)
    counts = sched.token_counts(500, (48, 80), anchors=1)
    assert [lv["tokens"] for lv in info["levels"]] == counts
    assert info["context_tokens"] == sum(counts)
    assert info["noisy"]["tokens"] == 9 * 24 * 40
    assert info["total_tokens"] == sum(counts) + 9 * 24 * 40
    assert info["levels"][0]["role"] == "pool" and info["params"] == {"lambda": 1.5, "depth": 4}


def test_short_history_with_and_without_padding(capsys) -> None:
    _, out, _ = _run(
        capsys, "--history", "3", "--latent", "64x64", "--pad", "none", "--anchors", "0", "--json"
    )
    levels = json.loads(out)["levels"]
    assert [(lv["name"], lv["frames"]) for lv in levels] == [("2x", 2), ("1x", 1)]
    _, out, _ = _run(capsys, "--history", "3", "--latent", "64x64", "--json")
    levels = json.loads(out)["levels"]
    assert [(lv["name"], lv["frames"]) for lv in levels] == [("4x", 16), ("2x", 2), ("1x", 2)]


def test_window_changes_only_the_noisy_line(capsys) -> None:
    _, out, _ = _run(capsys, "--history", "19", "--latent", "32x32", "--window", "3", "--json")
    info = json.loads(out)
    assert info["noisy"] == {"kernel": [1, 2, 2], "frames": 3, "tokens": 3 * 16 * 16}
    assert info["context_tokens"] == get_schedule("released-f1").total_tokens(19, (32, 32), anchors=1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--schedule", "bogus", "--history", "3", "--latent", "64x64"], "schedule must be one of"),
        (["--schedule", "geometric:lambda=1", "--history", "3", "--latent", "64x64"], "lambda must be"),
        (["--schedule", "geometric:tail=cut", "--history", "3", "--latent", "64x64"], "tail must be one of"),
        (["--schedule", "geometric:colour=2", "--history", "3", "--latent", "64x64"], "unknown parameter"),
        (
            ["--schedule", "geometric:lambda=2,depth=1000000", "--history", "3", "--latent", "64x64"],
            "at most 12",
        ),
        (["--schedule", "geometric:lambda=2,lambda=3", "--history", "3", "--latent", "64x64"], "given twice"),
        (["--schedule", "geometric:", "--history", "3", "--latent", "64x64"], "no parameters"),
        (["--history", "3", "--latent", "64"], "--latent must look like 64x64"),
        (["--history", "3", "--latent", "63x64"], "divisible"),
        (["--history", "-1", "--latent", "64x64"], "--history must be >= 0"),
        (["--history", "3", "--latent", "64x64", "--window", "0"], "--window must be >= 1"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, argv, message) -> None:
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("framepack pack-info: error: ")
    assert message in err


def test_error_and_help_list_the_schedule_names(capsys) -> None:
    _, _, err = _run(capsys, "--schedule", "bogus", "--history", "3", "--latent", "64x64")
    assert all(name in err for name in SCHEDULES)
    with pytest.raises(SystemExit) as exit_info:
        main(["pack-info", "--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(name in help_text.replace("- ", "-") for name in SCHEDULES)
