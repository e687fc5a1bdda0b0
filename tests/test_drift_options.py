"""Drift-research options: history dropout and uniform history noise in training; test-time
history noise, history guidance and a history ranking in generation (docs/drift.md)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from framepack.codecs.pixel import PixelCodec
from framepack.context import section_context
from framepack.errors import UserError
from framepack.options import GenerationOptions
from framepack.packing import parse_schedule
from framepack.pipeline import FramePackPipeline, Job, history_guided
from framepack.train.config import PRESETS, TrainConfig
from framepack.train.data import draw_micro_batches, make_source

from .pipeline_fixtures import tiny_components, write_image


@pytest.fixture(scope="module")
def tiny():
    config = PRESETS["tiny-test"].replace(layouts=("forward",))
    codec = PixelCodec(4, 4)
    return config, codec, make_source(config, codec)


def _history_frames(mb) -> torch.Tensor:
    """Every context frame but the start anchor (index 0), (k, C, h, w)."""
    return torch.cat([lv.latents.transpose(1, 2)[lv.indices != 0] for lv in mb.context.levels])


@pytest.mark.parametrize(
    "speeds, checksum",
    [
        # the world before issue 20 (2/4/6 px per frame): the checksum commit 0e85404 gave
        ({"slowly": 60, "steadily": 120, "quickly": 180}, 2715.9051996995295),
        # today's world (1.5/3/5 px per frame), same code
        ({"slowly": 45, "steadily": 90, "quickly": 150}, 1095.4815096784914),
    ],
)
def test_options_off_draw_the_same_samples_as_before(monkeypatch, speeds, checksum):
    """Defaults draw no extra random numbers: old runs resume bit for bit. The checksum of three
    steps of the tiny-test preset's samples is the one the code before these options gave
    (commit 0e85404, computed with both), with that commit's world speeds."""
    from framepack.data import world_script

    monkeypatch.setattr(world_script, "SPEEDS", speeds)
    config = PRESETS["tiny-test"]
    codec = PixelCodec(4, 4)
    source = make_source(config, codec)
    total = 0.0
    for step in range(3):
        for mb in draw_micro_batches(config, source, codec, parse_schedule(config.schedule), step, 0):
            total += float(mb.target.double().sum() + mb.noise.double().sum() + mb.sigma.double().sum())
            total += sum(float(lv.latents.double().sum()) for lv in mb.context.levels)
    assert total == pytest.approx(checksum, rel=1e-12)
    on = config.replace(history_dropout=0.5)
    assert "history_dropout" not in config.to_dict() and on.to_dict()["history_dropout"] == 0.5


def test_history_dropout_leaves_only_the_start_frame(tiny):
    config, codec, source = tiny
    schedule = parse_schedule(config.schedule)
    dropped, kept = 0, 0
    for step in range(6):
        for mb in draw_micro_batches(config.replace(history_dropout=0.5), source, codec, schedule, step, 0):
            for i in range(len(mb.captions)):
                frames = torch.cat(
                    [lv.latents[i].transpose(0, 1)[lv.indices[i] != 0] for lv in mb.context.levels]
                )
                if bool((frames == 0).all()):
                    dropped += 1
                else:
                    kept += 1
                anchor = [lv.latents[i].transpose(0, 1)[lv.indices[i] == 0] for lv in mb.context.levels]
                assert torch.cat(anchor).abs().sum() > 0  # the start frame stays
    assert dropped > 0 and kept > 0


def test_uniform_history_noise_draws_each_samples_std():
    from framepack.train.data import history_options
    from framepack.train.layouts import SectionLayout

    lay = SectionLayout("forward", 9, 6, 2, (1, 2, 3, 4, 5))
    gen = torch.Generator().manual_seed(0)
    fixed = PRESETS["tiny-test"].replace(history_noise=0.5)
    assert all(history_options(fixed, lay, gen) == (lay, 0.5) for _ in range(5))
    uniform = fixed.replace(history_noise_uniform=True)
    stds = [history_options(uniform, lay, gen)[1] for _ in range(200)]
    assert 0 <= min(stds) < 0.05 and 0.45 < max(stds) <= 0.5 and abs(np.mean(stds) - 0.25) < 0.05


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"history_dropout": 1.0}, "history_dropout"),
        ({"history_dropout": -0.1}, "history_dropout"),
        ({"history_noise_uniform": True}, "history_noise"),
    ],
)
def test_config_errors(changes, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**changes)


# -- generation -------------------------------------------------------------------------------


def make(tmp_path, name, **kw):
    base = {"image": write_image(tmp_path / "start.png"), "seconds": 3.0, "out": str(tmp_path / name)}
    return GenerationOptions(**{**base, "plan": "forward", **kw})


def test_dropped_history_context_is_the_anchor_with_zero_padding(tmp_path):
    job = Job(tiny_components(plan="forward"), make(tmp_path, "a.mp4"))
    latents = torch.randn(1, 192, job.plan.total, 4, 4)
    section = job.plan.sections[-1]
    assert len(section.history) > 0
    dropped = job.context(section, latents, drop_history=True)
    want = section_context(
        latents, torch.arange(latents.shape[2]), [], section.latent_indices, job.schedule, "forward",
        anchors=section.anchors,
    )  # fmt: skip
    for a, b in zip(dropped.levels, want.levels, strict=True):
        assert torch.equal(a.latents, b.latents) and torch.equal(a.indices, b.indices)
    full = job.context(section, latents)
    assert any(
        not torch.equal(a.latents, b.latents) for a, b in zip(full.levels, dropped.levels, strict=True)
    )


def test_history_guidance_is_classifier_free_guidance_on_the_history():
    x = torch.ones(2)
    v = history_guided(lambda x, s: x * 3, lambda x, s: x * 3, lambda x, s: x * 1, 2.5)
    assert torch.equal(v(x, 0.5), torch.full((2,), 3 + 1.5 * 2.0))


def test_research_options_change_the_video_and_are_recorded(tmp_path):
    from framepack.video import read_metadata

    pipe = FramePackPipeline(tiny_components(plan="forward"))
    base = pipe.generate(make(tmp_path, "base.mp4"), progress=False)
    assert "history_cfg" not in read_metadata(base.path)  # defaults leave the metadata as before
    long = pipe.generate(make(tmp_path, "long.mp4", seconds=12.0), progress=False)
    for kw in ({"history_cfg": 2.0}, {"history_noise": 0.5}, {"ranking": "similarity", "seconds": 12.0}):
        name = f"{next(iter(kw))}.mp4"
        one = pipe.generate(make(tmp_path, name, **kw), progress=False)
        again = pipe.generate(make(tmp_path, "again-" + name, **kw), progress=False)
        assert torch.equal(one.latents, again.latents)  # seeded: same options, same video
        # ranking: only once the history outgrows the finest levels does the choice matter
        assert not torch.equal(one.latents, (long if "ranking" in kw else base).latents), kw
        assert read_metadata(one.path)[next(iter(kw))] == next(iter(kw.values()))


def test_ranking_replaces_the_schedules_ranking(tmp_path):
    job = Job(tiny_components(plan="forward"), make(tmp_path, "r.mp4", ranking="hybrid"))
    assert job.schedule.ranking == "hybrid"
    assert job.schedule.levels == parse_schedule(job.spec.schedule).levels


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"history_noise": -1.0}, "--history-noise"),
        ({"history_cfg": 0.5}, "--history-cfg"),
        ({"ranking": "symmetric"}, "unknown ranking"),
    ],
)
def test_bad_research_options(tmp_path, kw, match):
    with pytest.raises(UserError, match=match):
        FramePackPipeline(tiny_components()).generate(make(tmp_path, "v.mp4", **kw), progress=False)


def test_released_models_refuse_the_research_options(tmp_path):
    comps = tiny_components(mode="released", plan="inverted")
    with pytest.raises(UserError, match="general-mode"):
        Job(comps, make(tmp_path, "v.mp4", plan="inverted", history_cfg=2.0))
    assert replace(comps.spec).mode == "released"
