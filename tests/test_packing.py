"""Tests for framepack.packing: released layouts, token counts, rankings, pack() properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from framepack.packing import (
    BASE_KERNEL,
    RANKINGS,
    SCHEDULES,
    FeatureSimilarity,
    Hybrid,
    Level,
    PackedContext,
    Schedule,
    TimeProximity,
    check_latent_size,
    geometric,
    get_ranking,
    get_schedule,
    pack,
    parse_schedule,
    power_kernel,
    released_f1_indices,
    released_inverted_indices,
    symmetric,
    token_count,
)

C, H, W = 2, 4, 4
FAST = settings(max_examples=40, deadline=None)


def _history(b: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, C, n, H, W, generator=torch.Generator().manual_seed(seed))


def _all_indices(ctx: PackedContext, batch: int) -> torch.Tensor:
    return torch.cat([torch.zeros(batch, 0, dtype=torch.int64)] + [lv.indices for lv in ctx.levels], dim=1)


# ---------------------------------------------------------------------------------------------
# Released layouts, index for index (SPEC sec. 5)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", range(6))
def test_released_inverted_indices_match_the_split(p: int) -> None:
    w = 9
    idx = released_inverted_indices(p, w)
    post = 1 + p * w + w
    expected = {
        "start": [0],
        "blank": list(range(1, 1 + p * w)),
        "noisy": list(range(1 + p * w, post)),
        "post": [post],
        "2x": [post + 1, post + 2],
        "4x": list(range(post + 3, post + 19)),
        "clean": [0, post],
    }
    for part, values in expected.items():
        assert idx[part].dtype == torch.int64
        assert idx[part].shape == (1, len(values)), part
        assert idx[part][0].tolist() == values, part


def test_released_f1_indices_match_the_split() -> None:
    idx = released_f1_indices(9)
    assert idx["start"].tolist() == [[0]]
    assert idx["4x"].tolist() == [list(range(1, 17))]
    assert idx["2x"].tolist() == [[17, 18]]
    assert idx["1x"].tolist() == [[19]]
    assert idx["noisy"].tolist() == [list(range(20, 29))]
    assert idx["clean"].tolist() == [[0, 19]]


@pytest.mark.parametrize("p", range(6))
def test_pack_reproduces_released_inverted_section(p: int) -> None:
    idx = released_inverted_indices(p, 9)
    buffer = _history(1, 25, seed=p)  # history buffer, new sections prepended: frame k sits at post + k
    history_indices = torch.cat([idx["post"], idx["2x"], idx["4x"]], dim=1)
    start = _history(1, 1, seed=100)
    ctx = pack(
        buffer[:, :, :19],
        history_indices,
        idx["noisy"],
        get_schedule("released-inverted"),
        anchors=start,
        anchor_indices=idx["start"],
    )
    post, two, four = buffer[:, :, :19].split([1, 2, 16], dim=2)
    assert [lv.kernel for lv in ctx.levels] == [(4, 8, 8), (2, 4, 4), (1, 2, 2)]
    assert torch.equal(ctx.levels[0].indices, idx["4x"]) and torch.equal(ctx.levels[0].latents, four)
    assert torch.equal(ctx.levels[1].indices, idx["2x"]) and torch.equal(ctx.levels[1].latents, two)
    assert torch.equal(ctx.levels[2].indices, idx["clean"])
    assert torch.equal(ctx.levels[2].latents, torch.cat([start, post], dim=2))


@pytest.mark.parametrize("p", range(6))
def test_first_inverted_section_zero_history_matches_released(p: int) -> None:
    idx = released_inverted_indices(p, 9)
    empty = torch.zeros(1, C, 0, H, W)
    start = _history(1, 1)
    ctx = pack(
        empty,
        torch.zeros(1, 0, dtype=torch.int64),
        idx["noisy"],
        get_schedule("released-inverted"),
        anchors=start,
        anchor_indices=idx["start"],
        pad_side="after",
    )
    assert torch.equal(ctx.levels[0].indices, idx["4x"])
    assert torch.equal(ctx.levels[1].indices, idx["2x"])
    assert torch.equal(ctx.levels[2].indices, idx["clean"])
    assert not ctx.levels[0].latents.any() and not ctx.levels[1].latents.any()
    assert torch.equal(ctx.levels[2].latents[:, :, :1], start) and not ctx.levels[2].latents[:, :, 1:].any()


def test_pack_reproduces_released_f1_section_and_its_zero_start() -> None:
    idx = released_f1_indices(9)
    start = _history(1, 1, seed=5)
    history = _history(1, 19)  # the last 19 latents, oldest first
    history_indices = torch.cat([idx["4x"], idx["2x"], idx["1x"]], dim=1)
    sched = get_schedule("released-f1")
    ctx = pack(history, history_indices, idx["noisy"], sched, anchors=start, anchor_indices=idx["start"])
    four, two, one = history.split([16, 2, 1], dim=2)
    assert torch.equal(ctx.levels[0].latents, four) and torch.equal(ctx.levels[0].indices, idx["4x"])
    assert torch.equal(ctx.levels[1].latents, two) and torch.equal(ctx.levels[1].indices, idx["2x"])
    assert torch.equal(ctx.levels[2].latents, torch.cat([start, one], dim=2))
    assert torch.equal(ctx.levels[2].indices, idx["clean"])
    # first section: the released buffer is all zeros; auto padding goes before the target
    empty = pack(
        history[:, :, :0],
        history_indices[:, :0],
        idx["noisy"],
        sched,
        anchors=start,
        anchor_indices=idx["start"],
    )
    assert [lv.indices.tolist() for lv in empty.levels] == [lv.indices.tolist() for lv in ctx.levels]


def test_released_token_counts_at_64x64() -> None:
    h = w = 64
    per_frame = (h // 2) * (w // 2)  # L_f with the base kernel (1,2,2)
    expected = [
        math.ceil(16 / 4) * (h // 8) * (w // 8),  # 4x: 16 frames, kernel (4,8,8)
        math.ceil(2 / 2) * (h // 4) * (w // 4),  # 2x: 2 frames, kernel (2,4,4)
        2 * per_frame,  # 1x: start + post
    ]
    sched = get_schedule("released-inverted")
    assert sched.token_counts(19, (h, w), anchors=1) == expected == [256, 256, 2048]
    assert sched.total_tokens(19, (h, w), anchors=1) == sum(expected)
    # beyond 19 frames the tail is deleted: the budget does not change
    assert sched.total_tokens(10_000, (h, w), anchors=1) == sum(expected)


@FAST
@given(
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 8), st.integers(1, 8)),
    frames=st.integers(1, 9),
    h=st.integers(1, 20),
    w=st.integers(1, 20),
)
def test_token_count_matches_replicate_padding_then_patchify(kernel, frames, h, w) -> None:
    # same padding rule as diffusers' _pad_for_3d_conv, then a stride = kernel patchify
    x = torch.zeros(1, 1, frames, h, w)
    pt, ph, pw = kernel
    x = F.pad(x, (0, (pw - w % pw) % pw, 0, (ph - h % ph) % ph, 0, (pt - frames % pt) % pt), mode="replicate")
    tokens = F.avg_pool3d(x, kernel, stride=kernel).flatten(2).shape[2]
    assert token_count(kernel, frames, (h, w)) == tokens


@pytest.mark.slow  # importing diffusers takes seconds
def test_token_count_matches_diffusers_padding() -> None:
    from diffusers.models.transformers.transformer_hunyuan_video_framepack import _pad_for_3d_conv

    x = torch.zeros(1, 1, 3, 60, 36)
    padded = _pad_for_3d_conv(x, (4, 8, 8))
    t, h, w = padded.shape[2:]
    assert token_count((4, 8, 8), 3, (60, 36)) == (t // 4) * (h // 8) * (w // 8) == 40


# ---------------------------------------------------------------------------------------------
# Schedules: construction, presets, validation
# ---------------------------------------------------------------------------------------------


def test_geometric_levels_known_answers() -> None:
    assert [(lv.kernel, lv.frames) for lv in geometric(lam=8, depth=3).levels] == [
        ((1, 2, 2), 1),
        ((2, 4, 4), 1),
        ((4, 8, 8), 1),
    ]
    # lambda = 2: rank i -> round(i / 3): 2 frames at 1x, then 3 per level (levels repeated)
    assert [lv.frames for lv in geometric(lam=2, depth=4).levels] == [2, 3, 3, 3]
    # lambda = 64: every other power level is dropped
    assert [lv.kernel for lv in geometric(lam=64, depth=4).levels] == [power_kernel(0), power_kernel(2)]


def test_presets_all_build_and_count() -> None:
    for name in SCHEDULES:
        sched = get_schedule(name)
        assert sched.name == name
        assert sched.capacity == sum(lv.frames for lv in sched.levels) >= 1
        assert sched.total_tokens(sched.capacity, (64, 64)) > 0


def test_temporal_and_level_duplication_layouts() -> None:
    td = get_schedule("temporal-duplication", depth=3, groups=2)
    assert [(lv.kernel, lv.frames) for lv in td.levels] == [((1, 2, 2), 2), ((2, 4, 4), 4), ((4, 8, 8), 8)]
    ld = get_schedule("level-duplication", depth=2, copies=3)
    assert [(lv.kernel, lv.frames) for lv in ld.levels] == [((1, 2, 2), 1)] * 3 + [((2, 4, 4), 2)] * 3
    # no temporal padding is wasted: level j costs groups * L_f / 4**j
    lf = 32 * 32
    assert td.token_counts(td.capacity, (64, 64)) == [2 * lf // 16, 2 * lf // 4, 2 * lf]


def test_parse_schedule_and_params() -> None:
    sched = parse_schedule("geometric:lambda=1.5,depth=4,tail=pool,pool_frames=2")
    assert sched.params == {"lambda": 1.5, "depth": 4}
    assert sched.tail == "pool" and sched.pool_frames == 2
    assert sched.levels == geometric(lam=1.5, depth=4).levels
    assert parse_schedule("symmetric:tail=grow,tail_kernel=8x16x16").tail_kernel == (8, 16, 16)


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: Level((0, 2, 2), 1), r"Level\.kernel must be three positive integers"),
        (lambda: Level((1, 2), 1), r"Level\.kernel"),
        (lambda: Level((1, 2, 2), 0), r"Level\.frames must be an integer >= 1"),
        (lambda: Level((1, 2, 2), -3), r"Level\.frames"),
        (lambda: Schedule(()), r"Schedule\.levels"),
        (
            lambda: Schedule((Level((1, 2, 2), 1),), tail="crop"),
            r"Schedule\.tail must be one of delete, grow, pool",
        ),
        (lambda: Schedule((Level((1, 2, 2), 1),), ranking="x"), r"Schedule\.ranking must be one of time"),
        (lambda: Schedule((Level((1, 2, 2), 1),), pool_frames=0), r"Schedule\.pool_frames"),
        (lambda: geometric(lam=1.0), r"lambda must be a finite number > 1"),
        (lambda: geometric(lam=0.5), r"lambda"),
        (lambda: geometric(depth=0), r"depth must be an integer >= 1"),
        (lambda: get_schedule("nope"), r"schedule must be one of released-inverted, .*geometric"),
        (
            lambda: get_schedule("geometric", groups=2),
            r"unknown parameter\(s\) groups .*allowed: lambda, depth",
        ),
        (lambda: get_schedule("released-f1", tail="x"), r"tail must be one of delete, grow, pool"),
        (lambda: parse_schedule("geometric:lambda"), r"key=value"),
        (lambda: get_ranking("nearest"), r"ranking must be one of time, similarity, hybrid, symmetric"),
        (lambda: Hybrid(tau=0), r"Hybrid\.tau"),
    ],
)
def test_invalid_configs_raise_value_error_naming_the_field(make, pattern) -> None:
    with pytest.raises(ValueError, match=pattern):
        make()


def test_check_latent_size() -> None:
    sched = get_schedule("released-inverted")
    check_latent_size(sched, (44, 36))  # padded kernels are fine by default
    with pytest.raises(ValueError, match=r"kernel \(4, 8, 8\) .*does not divide latent_hw \(44, 36\)"):
        check_latent_size(sched, (44, 36), allow_padding=False)
    with pytest.raises(ValueError, match="latent_hw must be two positive integers divisible"):
        sched.token_counts(19, (45, 36))


# ---------------------------------------------------------------------------------------------
# Token budgets stay bounded (Sec. 2: the sum of phi_i converges to L_f * lambda / (lambda - 1))
# ---------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    lam=st.floats(1.2, 100.0),
    depth=st.integers(1, 4),
    tail=st.sampled_from(["delete", "pool"]),
    n=st.integers(0, 100_000),
)
def test_geometric_total_is_bounded_and_matches_the_formula(lam, depth, tail, n) -> None:
    sched = geometric(lam=lam, depth=depth, tail=tail)
    hw = (2 ** (depth + 1), 2 ** (depth + 2))  # spatially divisible by every kernel used
    lf = (hw[0] // 2) * (hw[1] // 2)
    ideal = lf * lam / (lam - 1)
    total = sched.total_tokens(n, hw)
    full = sched.total_tokens(100_000, hw)
    # bounded: never more than with 100,000 frames, and constant past the capacity (+1 pooled)
    assert total <= full
    assert sched.total_tokens(sched.capacity + 1, hw) == full
    # each frame costs within sqrt(8) of phi_i; temporal replicate padding adds < L_f / 4**j per level
    assert full <= math.sqrt(8) * ideal + 4 / 3 * lf + (lf if tail == "pool" else 0)
    covered = lf * (1 - lam**-sched.capacity) / (1 - 1 / lam)
    assert full >= covered / math.sqrt(8)


@FAST
@given(lam=st.floats(1.2, 16.0), depth=st.integers(1, 3), n=st.integers(0, 100_000))
def test_grow_tail_grows_at_the_tail_kernel_rate(lam, depth, n) -> None:
    sched = geometric(lam=lam, depth=depth, tail="grow")
    hw = (32, 64)
    base = sched.total_tokens(sched.capacity, hw)
    extra = max(0, n - sched.capacity)
    assert sched.total_tokens(n, hw) == base + token_count(sched.resolved_tail_kernel, extra, hw)
    assert sched.resolved_tail_kernel == tuple(2 * k for k in sched.levels[-1].kernel)  # next power level


# ---------------------------------------------------------------------------------------------
# pack(): properties
# ---------------------------------------------------------------------------------------------

schedules = st.one_of(
    st.builds(
        lambda lam, depth, tail: geometric(lam=lam, depth=depth, tail=tail),
        st.floats(1.5, 70.0),
        st.integers(1, 3),
        st.sampled_from(["delete", "grow"]),
    ),
    st.sampled_from([get_schedule(name) for name in SCHEDULES]),
    st.lists(
        st.builds(Level, st.sampled_from([(1, 2, 2), (2, 4, 4), (4, 8, 8), (2, 2, 2)]), st.integers(1, 4)),
        min_size=1,
        max_size=4,
    )
    .map(tuple)
    .map(Schedule),
)


@st.composite
def packing_inputs(draw):
    b = draw(st.integers(1, 3))
    n = draw(st.integers(0, 30))
    t = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    # distinct true times per row, gaps allowed; the target sits anywhere
    hist_idx = torch.stack([torch.randperm(200, generator=gen)[:n] for _ in range(b)])
    target = torch.randint(0, 200, (b, 1), generator=gen) + torch.arange(t)
    history = torch.randn(b, C, n, H, W, generator=gen)
    return history, hist_idx.long(), target.long()


def _frame_for_index(
    history: torch.Tensor, hist_idx: torch.Tensor, row: int, index: int
) -> torch.Tensor | None:
    hit = (hist_idx[row] == index).nonzero()
    return None if hit.numel() == 0 else history[row, :, int(hit[0, 0])]


@FAST
@given(inputs=packing_inputs(), schedule=schedules, ranking=st.sampled_from(sorted(RANKINGS)))
def test_every_frame_at_most_once_at_its_true_time(inputs, schedule, ranking) -> None:
    history, hist_idx, target = inputs
    ctx = pack(history, hist_idx, target, schedule, ranking=get_ranking(ranking), pad="none")
    layout = schedule.layout(history.shape[2], pad="none")
    assert [(lv.kernel, lv.num_frames) for lv in ctx.levels] == [(s.kernel, s.total_frames) for s in layout]
    all_idx = _all_indices(ctx, history.shape[0])
    for row in range(history.shape[0]):
        values = all_idx[row].tolist()
        assert len(values) == len(set(values))  # no frame twice
        assert set(values) <= set(hist_idx[row].tolist())  # only real history frames
        for lv in ctx.levels:  # each latent is the history frame at that true index
            assert lv.indices[row].tolist() == sorted(lv.indices[row].tolist())
            for k, index in enumerate(lv.indices[row].tolist()):
                assert torch.equal(lv.latents[row, :, k], _frame_for_index(history, hist_idx, row, index))


@FAST
@given(inputs=packing_inputs(), schedule=schedules, ranking=st.sampled_from(["time", "similarity", "hybrid"]))
def test_assigned_frames_are_the_top_ranked_and_finer_levels_get_better_ranks(
    inputs, schedule, ranking
) -> None:
    history, hist_idx, target = inputs
    if schedule.tail != "delete":
        schedule = Schedule(schedule.levels)
    rank = get_ranking(ranking)
    ctx = pack(history, hist_idx, target, schedule, ranking=rank, pad="none")
    if history.shape[2] == 0:
        assert ctx.levels == ()
        return
    scores = rank(history, hist_idx, target)
    for row in range(history.shape[0]):
        score_of = dict(zip(hist_idx[row].tolist(), scores[row].tolist()))
        per_level = [[score_of[i] for i in lv.indices[row].tolist()] for lv in reversed(ctx.levels)]
        chosen = {i for lv in ctx.levels for i in lv.indices[row].tolist()}
        left_out = [s for i, s in score_of.items() if i not in chosen]
        assert len(chosen) == min(history.shape[2], schedule.capacity)
        for finer, coarser in zip(per_level, [*per_level[1:], left_out]):
            if finer and coarser:
                assert min(finer) >= max(coarser)


@FAST
@given(inputs=packing_inputs(), schedule=schedules)
def test_zero_padding_fills_levels_with_new_indices_and_tokens_match_layout(inputs, schedule) -> None:
    history, hist_idx, target = inputs
    n = history.shape[2]
    anchors = torch.ones(history.shape[0], C, 1, H, W)
    anchor_idx = torch.full((history.shape[0], 1), 500)
    ctx = pack(history, hist_idx, target, schedule, anchors=anchors, anchor_indices=anchor_idx)
    assert ctx.num_tokens() == schedule.total_tokens(n, (H, W), anchors=1)
    base = next(lv for lv in reversed(ctx.levels) if lv.kernel == BASE_KERNEL)
    assert torch.equal(base.latents[:, :, :1], anchors) and base.indices[:, 0].eq(500).all()  # anchors first
    padded = sum(lv.num_frames for lv in ctx.levels) - 1 - min(n, schedule.capacity)
    assert padded == max(0, schedule.capacity - n) or schedule.tail != "delete"
    for row in range(history.shape[0]):
        values = _all_indices(ctx, history.shape[0])[row].tolist()
        assert len(values) == len(set(values))
        for lv in ctx.levels:
            for k, index in enumerate(lv.indices[row].tolist()):
                frame = _frame_for_index(history, hist_idx, row, index)
                if index != 500 and frame is None:  # a padding frame: zeros
                    assert not lv.latents[row, :, k].any()


def test_padding_continues_away_from_the_target() -> None:
    history = _history(1, 2)
    sched = Schedule((Level((1, 2, 2), 2), Level((2, 4, 4), 3)))
    ctx = pack(history, torch.tensor([[10, 11]]), torch.tensor([[12, 13]]), sched)
    assert ctx.levels[0].indices.tolist() == [[7, 8, 9]]  # before the history, the target is after
    ctx = pack(history, torch.tensor([[10, 11]]), torch.tensor([[3, 4]]), sched)
    assert ctx.levels[0].indices.tolist() == [[12, 13, 14]]


def test_pad_none_gives_short_and_absent_levels() -> None:
    sched = get_schedule("released-f1")
    idx = released_f1_indices(9)
    start = _history(1, 1)
    ctx = pack(
        _history(1, 2),
        torch.tensor([[18, 19]]),
        idx["noisy"],
        sched,
        anchors=start,
        anchor_indices=idx["start"],
        pad="none",
    )
    assert [(lv.kernel, lv.indices.tolist()) for lv in ctx.levels] == [
        ((2, 4, 4), [[18]]),
        ((1, 2, 2), [[0, 19]]),
    ]
    empty = pack(
        torch.zeros(1, C, 0, H, W), torch.zeros(1, 0, dtype=torch.int64), idx["noisy"], sched, pad="none"
    )
    assert empty.levels == () and empty.num_tokens() == 0


def test_rows_get_their_own_assignment_with_equal_counts() -> None:
    history = _history(2, 6)
    hist_idx = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]])
    target = torch.tensor([[6, 7], [-2, -1]])  # row 0 continues forward, row 1 backward
    sched = Schedule((Level((1, 2, 2), 1), Level((2, 4, 4), 2)))
    ctx = pack(history, hist_idx, target, sched)
    assert ctx.levels[1].indices.tolist() == [[5], [0]]
    assert ctx.levels[0].indices.tolist() == [[3, 4], [1, 2]]
    assert torch.equal(ctx.levels[1].latents[1, :, 0], history[1, :, 0])


def test_grow_and_pool_tails() -> None:
    history = _history(1, 10)
    hist_idx = torch.arange(10)[None]
    target = torch.tensor([[10]])
    levels = (Level((1, 2, 2), 1), Level((2, 4, 4), 2))
    grow = pack(history, hist_idx, target, Schedule(levels, tail="grow"))
    assert grow.levels[0].kernel == (4, 8, 8)
    assert grow.levels[0].indices.tolist() == [list(range(7))]
    pool = pack(history, hist_idx, target, Schedule(levels, tail="pool", pool_frames=2))
    assert pool.levels[0].kernel == (2, 4, 4)  # the coarsest level's kernel
    assert pool.levels[0].indices.tolist() == [[round(sum(range(4)) / 4), round(sum(range(4, 7)) / 3)]]
    torch.testing.assert_close(pool.levels[0].latents[:, :, 0], history[:, :, 0:4].mean(dim=2))
    torch.testing.assert_close(pool.levels[0].latents[:, :, 1], history[:, :, 4:7].mean(dim=2))
    # with nothing left over, no tail level appears
    assert len(pack(history[:, :, :3], hist_idx[:, :3], target, Schedule(levels, tail="pool")).levels) == 2


# ---------------------------------------------------------------------------------------------
# Rankings
# ---------------------------------------------------------------------------------------------


def _revisiting_history() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """10 frames at times 0..9; frame 2 looks like the newest frame 9 (the video returns there)."""
    history = _history(1, 10, seed=3)
    history[:, :, 2] = history[:, :, 9] + 0.01 * _history(1, 1, seed=4)[:, :, 0]
    return history, torch.arange(10)[None], torch.tensor([[10, 11]])


def test_feature_similarity_picks_the_most_similar_frames() -> None:
    history, hist_idx, target = _revisiting_history()
    sched = Schedule((Level((1, 2, 2), 2), Level((2, 4, 4), 2)))
    by_time = pack(history, hist_idx, target, sched, ranking=TimeProximity())
    by_sim = pack(history, hist_idx, target, sched, ranking=FeatureSimilarity())
    assert by_time.levels[1].indices.tolist() == [[8, 9]]
    assert by_sim.levels[1].indices.tolist() == [[2, 9]]  # positions stay the true times
    # with an explicit estimate of the next section, the frames most like it win
    estimate = history[:, :, [5]] * 2.0
    by_est = pack(history, hist_idx, target, sched, ranking=get_ranking("similarity"), estimate=estimate)
    sims = F.cosine_similarity(
        history[0].transpose(0, 1).flatten(1), estimate[0, :, 0].flatten()[None], dim=1
    )
    top = sims.argsort(descending=True)[:2].sort().values.tolist()
    assert by_est.levels[1].indices.tolist() == [top]
    assert 5 in top


def test_hybrid_interpolates_between_similarity_and_time() -> None:
    history, hist_idx, target = _revisiting_history()
    sched = Schedule((Level((1, 2, 2), 2),))
    assert pack(history, hist_idx, target, sched, ranking=Hybrid(weight=0.0)).levels[0].indices.tolist() == [
        [2, 9]
    ]
    assert pack(history, hist_idx, target, sched, ranking=Hybrid(weight=100.0)).levels[
        0
    ].indices.tolist() == [[8, 9]]


def test_symmetric_progression_gives_both_sides_the_same_levels() -> None:
    sched = symmetric(lam=2, depth=2)  # levels 1x: 4 frames, 2x: 6 frames
    hist_idx = torch.cat([torch.arange(0, 20), torch.arange(30, 50)])[None]
    history = _history(1, 40)
    ctx = pack(history, hist_idx, torch.arange(20, 30)[None], sched)
    assert ctx.levels[1].indices.tolist() == [[18, 19, 30, 31]]
    assert ctx.levels[0].indices.tolist() == [[15, 16, 17, 32, 33, 34]]
