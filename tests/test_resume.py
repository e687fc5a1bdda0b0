"""Resume state: round trip, readable failures, per-section generators, graceful stop."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from framepack.errors import UserError
from framepack.resume import (
    ResumeState,
    SectionFiles,
    StopFlag,
    load_state,
    resume_path,
    save_state,
    section_generator,
    section_seed,
)

SETTINGS = {"model": "tiny", "seed": 7, "steps": 25, "prompts": ["a", "b"], "plan": {"kind": "inverted"}}


def _state(next_section: int = 3) -> ResumeState:
    return ResumeState(next_section=next_section, settings=dict(SETTINGS), seed=7)


def test_round_trip(tmp_path):
    path = save_state(resume_path(tmp_path / "out.mp4"), _state())
    assert path.name == "out.resume.safetensors"
    got = load_state(path, expected={"model": "tiny", "steps": 25})
    assert got == _state()


def test_section_files_save_load_cleanup(tmp_path):
    """Each section in its own checked file; the state points past the last one saved."""
    files = SectionFiles(tmp_path / "v.mp4")
    assert not files.exists()
    x = [torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    for step, latents in enumerate(x):
        files.save(step, latents, SETTINGS, seed=7)
    assert files.exists() and files.next_section(SETTINGS) == 2
    assert torch.equal(files.load(1, (1, 4, 2, 3, 3)), x[1])
    with pytest.raises(UserError, match="shape"):
        files.load(1, (1, 4, 3, 3, 3))
    with pytest.raises(UserError, match="steps=30"):
        files.next_section({**SETTINGS, "steps": 30})
    (files.parts / ".section_00002.safetensors.tmp1").write_bytes(b"half")
    files.remove_litter()
    assert sorted(p.name for p in files.parts.iterdir()) == [
        "section_00000.safetensors",
        "section_00001.safetensors",
    ]
    files.cleanup()
    assert not files.exists() and list(tmp_path.iterdir()) == []


def test_save_replaces_atomically(tmp_path):
    path = save_state(tmp_path / "s.safetensors", _state(1))
    save_state(path, _state(2))
    assert load_state(path).next_section == 2
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]


def test_incompatible_settings_name_the_setting(tmp_path):
    path = save_state(tmp_path / "s.safetensors", _state())
    with pytest.raises(UserError, match=r"model=\"tiny\".*model=\"hunyuan-13b\""):
        load_state(path, expected={"model": "hunyuan-13b"})
    with pytest.raises(UserError, match="steps"):
        load_state(path, expected={"model": "tiny", "steps": 30})
    with pytest.raises(UserError, match="does not record the setting 'shift'"):
        load_state(path, expected={"shift": 3.0})
    # Tuples compare equal to the lists JSON stored.
    assert load_state(path, expected={"prompts": ("a", "b")}).next_section == 3


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(UserError, match="no resume state"):
        load_state(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(UserError, match="unreadable"):
        load_state(bad)
    from safetensors.torch import save_file

    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(UserError, match="not a FramePack resume state"):
        load_state(other)


@given(st.integers(0, 2**32), st.integers(0, 10_000))
def test_section_seed_reproducible_and_in_range(seed, section):
    value = section_seed(seed, section)
    assert value == section_seed(seed, section)
    assert 0 <= value < 2**63


def test_section_generators_distinct_and_reproducible():
    draws = {(s, k): torch.randn(4, generator=section_generator(s, k)) for s in (0, 1) for k in range(4)}
    assert torch.equal(draws[(0, 2)], torch.randn(4, generator=section_generator(0, 2)))
    rows = list(draws.values())
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            assert not torch.equal(rows[i], rows[j])
    # seed 1 section 0 must not equal seed 0 section 1 (the flaw of seed + section).
    assert section_seed(1, 0) != section_seed(0, 1)


def test_stop_flag_first_signal_sets_flag_second_sigint_raises():
    before = signal.getsignal(signal.SIGINT)
    notices = []
    with StopFlag(on_signal=notices.append) as stop:
        assert not stop
        os.kill(os.getpid(), signal.SIGINT)
        assert stop and stop.requested and stop.signum == signal.SIGINT
        assert notices == [signal.SIGINT]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_stop_flag_sigterm_and_restore():
    before = signal.getsignal(signal.SIGTERM)
    with StopFlag(on_signal=None) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM only keeps the flag set
        assert stop
    assert signal.getsignal(signal.SIGTERM) is before


def test_stop_flag_request_without_signals():
    stop = StopFlag(on_signal=None)
    assert not stop
    stop.request()
    assert stop
