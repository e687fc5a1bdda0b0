"""framepack.context: training and generation build the same packed context for a section."""

from __future__ import annotations

import pytest
import torch

from framepack.context import LAYOUTS, STRATEGY_LAYOUT, history_positions, released_context, section_context
from framepack.options import GenerationOptions
from framepack.packing import parse_schedule
from framepack.pipeline import Job
from framepack.plans import make_plan
from framepack.train.layouts import SectionLayout, build_context

from .pipeline_fixtures import tiny_components, write_image


def _same(a, b) -> None:
    assert [lv.kernel for lv in a.levels] == [lv.kernel for lv in b.levels]
    for x, y in zip(a.levels, b.levels):
        assert torch.equal(x.indices, y.indices) and torch.equal(x.latents, y.latents)


@pytest.mark.parametrize("strategy", ["forward", "inverted"])
def test_training_and_generation_build_the_same_context(strategy, tmp_path):
    """Every section of a real job (tiny model, general mode) sees, from a timeline of true
    latents, exactly the context training packs for the same section of the same video."""
    components = tiny_components(plan=strategy)
    options = GenerationOptions(
        image=write_image(tmp_path / "s.png"), seconds=6.0, out=str(tmp_path / "v.mp4")
    )
    job = Job(components, options)
    plan, total = job.plan, job.plan.total
    assert len(plan) >= 4
    latents = torch.randn(1, 192, total, 4, 4, generator=torch.Generator().manual_seed(0))
    schedule = parse_schedule(components.spec.schedule)
    layout = STRATEGY_LAYOUT[strategy]
    for section in plan:
        window = section.stop - section.start
        lay = SectionLayout(
            layout, total, section.start, window, history_positions(layout, total, section.start, window)
        )
        trained, target, target_idx = build_context(latents, torch.arange(total), lay, schedule)
        _same(job.context(section, latents), trained)
        assert torch.equal(target, latents[:, :, section.start : section.stop])
        assert target_idx.tolist() == [list(section.latent_indices)]


def test_history_noise_and_anchor_times():
    timeline = torch.randn(1, 4, 12, 4, 4, generator=torch.Generator().manual_seed(1))
    schedule = parse_schedule("released-f1")
    args = (timeline, torch.arange(12), range(1, 6), range(6, 8), schedule, "forward")
    clean = section_context(*args, anchors=(0,))
    noisy = section_context(
        *args, anchors=(0,), history_noise=0.5, generator=torch.Generator().manual_seed(2)
    )
    one_x = next(lv for lv in clean.levels if lv.kernel == (1, 2, 2))
    assert one_x.indices[0, 0] == 0 and torch.equal(one_x.latents[:, :, 0], timeline[:, :, 0])  # anchor first
    assert not torch.equal(clean.levels[-1].latents, noisy.levels[-1].latents)  # history noised
    moved = section_context(*args, anchors=(0,), anchor_times=(3,))
    assert next(lv for lv in moved.levels if lv.kernel == (1, 2, 2)).indices[0, 0] == 3
    with pytest.raises(ValueError, match="layout"):
        section_context(*args[:5], "sideways")
    assert set(LAYOUTS) == set(STRATEGY_LAYOUT.values())


def test_released_context_follows_the_plan_slots():
    plan = make_plan("forward", sections=2, window=9, mode="released")
    timeline = torch.randn(1, 4, plan.total, 4, 4, generator=torch.Generator().manual_seed(3))
    section = plan.sections[1]
    ctx = released_context(timeline, section.levels)
    for lv, slots in zip(ctx.levels, section.levels):
        assert lv.indices.tolist() == [list(slots.indices)]
        for k, frame in enumerate(slots.frames):
            want = torch.zeros_like(timeline[:, :, 0]) if frame is None else timeline[:, :, frame]
            assert torch.equal(lv.latents[:, :, k], want)
