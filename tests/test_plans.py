"""Section plans: released layouts index for index, and properties of every strategy."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from framepack.plans import (
    STRATEGIES,
    Anchor,
    Plan,
    make_plan,
    num_sections,
    released_paddings,
)

# ---------------------------------------------------------------------------------------------
# Independent re-statement of the released loops (SPEC sec. 5), simulating the history buffer with
# frame ids (None = the zero latents the buffer starts with).


def released_inverted_reference(n: int, w: int) -> list[dict]:
    paddings = list(reversed(range(n)))
    if n > 4:
        paddings = [3] + [2] * (n - 3) + [1, 0]
    history: list[int | None] = [None] * 19
    out = []
    for k, p in enumerate(paddings):
        sizes = [1, p * w, w, 1, 2, 16]
        idx = list(range(sum(sizes)))
        cuts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        start_i, _blank, noisy, post_i, i2x, i4x = (idx[cuts[i] : cuts[i + 1]] for i in range(6))
        post, f2x, f4x = history[:1], history[1:3], history[3:19]
        frames = list(range(1 + (n - 1 - k) * w, 1 + (n - k) * w))  # where the section ends up
        out.append(
            dict(
                padding=p,
                frames=frames,
                noisy=noisy,
                clean=([0, *post], start_i + post_i),
                x2=(f2x, i2x),
                x4=(f4x, i4x),
            )
        )
        history = frames + history
    return out


def released_f1_reference(n: int, w: int) -> list[dict]:
    history: list[int | None] = [None] * 19 + [0]
    out = []
    for k in range(n):
        idx = list(range(1 + 16 + 2 + 1 + w))
        start_i, i4x, i2x, i1x, noisy = idx[:1], idx[1:17], idx[17:19], idx[19:20], idx[20:]
        f4x, f2x, f1x = history[-19:-3], history[-3:-1], history[-1:]
        frames = list(range(1 + k * w, 1 + (k + 1) * w))
        out.append(
            dict(frames=frames, noisy=noisy, clean=([0, *f1x], start_i + i1x), x2=(f2x, i2x), x4=(f4x, i4x))
        )
        history = history + frames
    return out


def levels_of(section):
    x4, x2, x1 = section.levels
    assert (x4.kernel, x2.kernel, x1.kernel) == ((4, 8, 8), (2, 4, 4), (1, 2, 2))
    return {
        "clean": (list(x1.frames), list(x1.indices)),
        "x2": (list(x2.frames), list(x2.indices)),
        "x4": (list(x4.frames), list(x4.indices)),
    }


@pytest.mark.parametrize("n", range(1, 13))
@pytest.mark.parametrize("w", [9, 4])
def test_released_inverted_layout_index_for_index(n, w):
    plan = make_plan("inverted", sections=n, window=w, mode="released")
    ref = released_inverted_reference(n, w)
    assert plan.total == 1 + n * w and len(plan) == n
    for section, r in zip(plan, ref, strict=True):
        assert section.padding == r["padding"]
        assert list(section.frames) == r["frames"]
        assert list(section.latent_indices) == r["noisy"]
        assert levels_of(section) == {k: r[k] for k in ("clean", "x2", "x4")}


@pytest.mark.parametrize("n", range(1, 13))
def test_released_f1_layout_index_for_index(n):
    plan = make_plan("forward", sections=n, window=9, mode="released")
    for section, r in zip(plan, released_f1_reference(n, 9), strict=True):
        assert list(section.frames) == r["frames"]
        assert list(section.latent_indices) == r["noisy"]
        assert levels_of(section) == {k: r[k] for k in ("clean", "x2", "x4")}


def test_released_paddings_and_section_count():
    assert released_paddings(4) == [3, 2, 1, 0]
    assert released_paddings(6) == [3, 2, 2, 2, 1, 0]
    assert num_sections(5.0) == 4  # 5 s * 30 fps / 36 = 4.17
    assert num_sections(60.0) == 50
    assert num_sections(0.1) == 1


def test_released_inverted_end_image_fills_first_post_slot():
    plan = make_plan("inverted", sections=3, window=9, mode="released", end_image=True)
    assert plan.total == 1 + 27 + 1 and plan.known == (0, 28)
    first = plan[0]
    assert first.frames == range(19, 28)
    assert levels_of(first)["clean"] == ([0, 28], [0, 1 + 2 * 9 + 9])


# ---------------------------------------------------------------------------------------------
# Properties of every strategy


@st.composite
def plan_args(draw, modes=("general",)):
    strategy = draw(st.sampled_from(STRATEGIES))
    sections = draw(st.integers(1, 7))
    window = draw(st.integers(1, 4))
    existing = draw(st.sampled_from([0, 0, 0, 3]))
    start_image = draw(st.booleans())
    end_image = draw(st.booleans())
    prefix = existing if existing else int(start_image)
    n_img = draw(st.integers(0, 2))
    n_prompt = draw(st.integers(1 if strategy == "multi-endpoint" else 0, 3))
    hi = prefix + sections * window + n_img
    count = min(n_img + n_prompt, hi - prefix)
    times = draw(st.lists(st.integers(prefix, hi - 1), min_size=count, max_size=count, unique=True))
    anchors = [Anchor(t, prompt=i + 1, image=i < n_img) for i, t in enumerate(times)]
    return dict(
        strategy=strategy,
        sections=sections,
        window=window,
        mode=draw(st.sampled_from(modes)),
        start_image=start_image,
        end_image=end_image,
        existing=existing,
        anchors=anchors,
        history_limit=draw(st.sampled_from([None, 5])),
    )


def build(args) -> Plan:
    try:
        return make_plan(**args)
    except ValueError as err:
        assume("fall in one section" not in str(err))
        raise


@settings(max_examples=300, deadline=None)
@given(plan_args())
def test_every_frame_generated_exactly_once(args):
    plan = build(args)
    generated = [t for s in plan for t in s.frames]
    assert len(generated) == len(set(generated))
    assert set(generated).isdisjoint(plan.known)
    assert set(generated) | set(plan.known) == set(range(plan.total))
    assert all(s.stop - s.start <= plan.window for s in plan)
    assert [s.step for s in plan] == list(range(len(plan)))


@settings(max_examples=300, deadline=None)
@given(plan_args())
def test_context_only_sees_known_or_earlier_frames(args):
    plan = build(args)
    for step, section in enumerate(plan):
        available = plan.available_after(step)
        assert section.context_frames() <= available
        assert set(section.anchors).isdisjoint(section.history)
        assert list(section.latent_indices) == list(section.frames)  # general mode: true times
        if args["history_limit"] is not None:
            assert len(section.history) <= args["history_limit"]
        # nearest first: distance to the section never decreases along the history
        dist = [section.start - t if t < section.start else t - section.stop + 1 for t in section.history]
        assert dist == sorted(dist)
        if args["start_image"] or args["existing"]:
            assert 0 in section.anchors  # the start frame is always in context (F1, inverted)


def slots_of(plan: Plan) -> list[int]:
    starts = sorted(s.start for s in plan)
    return [starts.index(s.start) for s in plan]


@settings(max_examples=300, deadline=None)
@given(plan_args())
def test_order_is_what_the_name_says(args):
    plan = build(args)
    slots, m = slots_of(plan), len(plan)
    if args["strategy"] == "forward":
        assert slots == list(range(m))
    elif args["strategy"] == "inverted":
        assert slots == list(reversed(range(m)))
    elif args["strategy"] == "endpoints":
        assert set(slots[:2]) == {0, m - 1} or m == 1
    else:
        anchored = {
            i
            for i, s in enumerate(sorted(plan, key=lambda s: s.start))
            for a in plan.anchors
            if not a.image and s.start <= a.time < s.stop
        }
        assert set(slots[: len(anchored)]) == anchored


@settings(max_examples=100, deadline=None)
@given(plan_args())
def test_json_round_trip(args):
    plan = build(args)
    assert Plan.from_json(plan.to_json()) == plan


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(STRATEGIES), st.integers(1, 12), st.booleans(), st.sampled_from([0, 20]))
def test_released_mode_properties(strategy, sections, end_image, existing):
    prefix = existing or 1
    anchors = [Anchor(prefix + 9 * (sections - 1))] if strategy == "multi-endpoint" else []
    if strategy == "forward" and end_image:
        with pytest.raises(ValueError, match="forward"):
            make_plan(strategy, sections=sections, mode="released", end_image=True)
        return
    plan = make_plan(
        strategy, sections=sections, mode="released", end_image=end_image, existing=existing, anchors=anchors
    )
    for step, section in enumerate(plan):
        assert section.context_frames() <= plan.available_after(step)
        counts = [len(lv.frames) for lv in section.levels]
        assert counts == [16, 2, 2]
        assert len(section.latent_indices) == 9


# ---------------------------------------------------------------------------------------------
# Details and refusals


def test_endpoints_fill_sees_both_sides():
    plan = make_plan("endpoints", sections=5, window=2)
    assert [s.start for s in plan] == [1, 9, 5, 3, 7]
    middle = plan[2]
    assert set(middle.history[:2]) == {2, 9}  # nearest generated frames on both sides


def test_text_to_video_first_section_has_no_anchor():
    plan = make_plan("forward", sections=3, window=2, start_image=False)
    assert plan.known == () and plan[0].anchors == () and plan[0].history == ()
    assert plan[1].history == (1, 0)


def test_extension_continues_after_existing_video():
    plan = make_plan("forward", sections=2, window=3, existing=5)
    assert plan.known == (0, 1, 2, 3, 4) and plan[0].frames == range(5, 8)
    assert plan[0].history == (4, 3, 2, 1)
    released = make_plan("inverted", sections=2, window=3, existing=5, mode="released")
    assert levels_of(released[0])["clean"][0][0] == 4  # start slot: the last existing frame


def test_prompts_and_keyframes_follow_anchors():
    plan = make_plan(
        "multi-endpoint", sections=4, window=2, anchors=[Anchor(3, prompt=1), Anchor(6, prompt=2, image=True)]
    )
    assert plan.known == (0, 6) and plan.total == 10
    by_start = {s.start: s for s in plan}
    assert by_start[3].step == 0 and by_start[3].prompt == 1
    assert by_start[1].prompt == 0 and by_start[7].prompt == 2 and by_start[7].image_anchor == 1
    assert 6 in by_start[3].anchors  # the keyframe after the section, at its true time


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(strategy="forward", mode="released", start_image=False), "start image"),
        (dict(strategy="forward", mode="released", end_image=True), "end image"),
        (dict(strategy="inverted", mode="released", anchors=[Anchor(4, image=True)]), "multiple of 9"),
        (dict(strategy="multi-endpoint"), "at least one anchor"),
        (dict(strategy="forward", anchors=[Anchor(0)]), "outside"),
        (dict(strategy="forward", anchors=[Anchor(3), Anchor(3, image=True)]), "share a time"),
        (dict(strategy="multi-endpoint", anchors=[Anchor(2), Anchor(3)]), "one section"),
        (dict(strategy="sideways"), "strategy"),
        (dict(strategy="forward", mode="exact"), "mode"),
    ],
)
def test_refusals_say_why(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_plan(sections=3, **kwargs)
