import pytest

from framepack.timeline import PromptTimeline, parse_timeline


def test_parse_two_entries():
    tl = parse_timeline("0s: a man walks; 4s: he turns and waves")
    assert tl.entries == ((0.0, "a man walks"), (4.0, "he turns and waves"))
    assert tl.prompt_at(0) == "a man walks"
    assert tl.prompt_at(3.99) == "a man walks"
    assert tl.prompt_at(4) == "he turns and waves"
    assert tl.prompt_at(100) == "he turns and waves"


def test_first_entry_covers_time_before_it():
    tl = parse_timeline("2s: late start")
    assert tl.prompt_at(0.0) == "late start"


def test_newlines_and_decimals():
    tl = parse_timeline("0s: a\n1.5s: b\n")
    assert tl.entries == ((0.0, "a"), (1.5, "b"))
    assert parse_timeline(tl.format()) == tl


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("0s: a; 4x: b", "entry 2"),
        ("a man walks", "entry 1"),
        ("0s: a; 0s: b", "entry 2"),
        ("3s: a; 1s: b", "entry 2"),
        ("0s: ", "entry 1"),
        (" ; ", "empty"),
    ],
)
def test_errors_say_where(text, where):
    with pytest.raises(ValueError, match=where):
        parse_timeline(text)


def test_single():
    assert PromptTimeline.single("x").prompts == ["x"]
