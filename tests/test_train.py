"""Unit tests of the training pieces: loss, layouts, data determinism, config, EMA, checkpoints, plot."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from framepack.codecs.pixel import PixelCodec
from framepack.packing import parse_schedule
from framepack.train import checkpoint as ckpt_mod
from framepack.train.config import PRESETS, DataConfig, TrainConfig, load_config
from framepack.train.data import draw_micro_batches, make_source, sample_window, section_caption
from framepack.train.ema import EMA, ema_beta
from framepack.train.layouts import (
    LAYOUTS,
    SectionLayout,
    build_context,
    draw_layout,
    history_positions,
    section_range,
)
from framepack.train.loss import flow_matching_loss, noisy_latents, sample_sigmas, shift_sigma
from framepack.train.plot import plot_loss, smooth

# -- loss -----------------------------------------------------------------------------------------


def test_shift_sigma_fixes_ends_and_is_identity_at_one():
    s = torch.linspace(0, 1, 11)
    assert torch.allclose(shift_sigma(s, 1.0), s)
    shifted = shift_sigma(s, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert bool((shifted[1:-1] > s[1:-1]).all())  # shift > 1 moves toward high noise
    assert bool((shifted.diff() > 0).all())


@pytest.mark.parametrize("kind", ["logit-normal", "uniform"])
def test_sample_sigmas_in_range_and_reproducible(kind):
    a = sample_sigmas(1000, torch.Generator().manual_seed(1), kind, shift=2.0)
    b = sample_sigmas(1000, torch.Generator().manual_seed(1), kind, shift=2.0)
    assert torch.equal(a, b)
    assert a.shape == (1000,) and bool(((a > 0) & (a < 1)).all())
    assert a.mean() > 0.5  # the shift moves mass toward noise
    with pytest.raises(ValueError, match="sigma sampling kind"):
        sample_sigmas(2, torch.Generator(), "cosine")


def test_flow_matching_loss_zero_for_the_true_velocity():
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 2, 4, 4, generator=gen), torch.randn(3, 4, 2, 4, 4, generator=gen)
    sigma = torch.tensor([0.1, 0.5, 0.9])
    # An oracle knows x0 and recovers the velocity from x_sigma exactly: v = (x_sigma - x0) / sigma
    oracle = lambda x, s: (x - x0) / s.view(-1, 1, 1, 1, 1)  # noqa: E731
    assert flow_matching_loss(oracle, x0, noise, sigma).abs().max() < 1e-10
    zero = flow_matching_loss(lambda x, s: torch.zeros_like(x), x0, noise, sigma)
    assert torch.allclose(zero, ((noise - x0) ** 2).flatten(1).mean(1))
    # the interpolation follows the contract: sigma 0 is data, sigma 1 is noise
    assert torch.equal(noisy_latents(x0, noise, torch.zeros(3)), x0)
    assert torch.equal(noisy_latents(x0, noise, torch.ones(3)), noise)


# -- layouts --------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(2, 40),
    window=st.integers(1, 9),
    layout=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**31),
)
def test_layouts_never_show_the_section_and_respect_their_side(length, window, layout, seed):
    if length < window + 1:
        with pytest.raises(ValueError):
            section_range(layout, length, window)
        return
    lay = draw_layout((layout,), length, window, torch.Generator().manual_seed(seed))
    lo, hi = section_range(layout, length, window)
    assert lo <= lay.start <= hi and lay.start >= 1 and lay.start + window <= length
    section = set(lay.section)
    assert not section & set(lay.history) and 0 not in lay.history
    before = [p for p in lay.history if p < lay.start]
    after = [p for p in lay.history if p >= lay.start + window]
    assert before + after == list(lay.history)
    if layout == "forward":
        assert not after and before == list(range(1, lay.start))
    if layout == "inverted":
        assert not before and after == list(range(lay.start + window, length))
    if layout == "endpoints":
        assert len(lay.history) == length - 1 - window


def test_build_context_start_anchor_no_leak_and_released_levels():
    schedule = parse_schedule("released-f1")
    n, window = 24, 3
    latents = torch.arange(1 + n, dtype=torch.float32).view(1, 1, 1 + n, 1, 1).expand(1, 2, 1 + n, 4, 4)
    indices = torch.tensor([0, *range(50, 50 + n)])  # a window far from the start frame
    for layout in LAYOUTS:
        start = 10
        lay = SectionLayout(layout, 1 + n, start, window, history_positions(layout, 1 + n, start, window))
        context, target, target_idx = build_context(latents, indices, lay, schedule)
        assert target_idx.tolist() == [[59, 60, 61]]
        assert torch.equal(target[0, 0, :, 0, 0], torch.tensor([10.0, 11.0, 12.0]))
        kernels = [lv.kernel for lv in context.levels]
        assert kernels == [(4, 8, 8), (2, 4, 4), (1, 2, 2)]  # coarsest first, as released
        assert [lv.num_frames for lv in context.levels] == [16, 2, 2]  # start anchor + 1 frame at 1x
        base = context.levels[-1]
        assert base.indices[0, 0] == 0 and bool((base.latents[0, :, 0] == 0).all())  # the start frame
        seen = torch.cat([lv.indices[0] for lv in context.levels]).tolist()
        assert not set(seen) & set(target_idx[0].tolist())  # the section never leaks into context
        nearest = base.indices[0, 1].item()
        assert nearest == {"forward": 58, "inverted": 62, "endpoints": 58}[layout]


def test_history_noise_only_touches_history():
    schedule = parse_schedule("released-f1")
    latents = torch.zeros(1, 2, 9, 4, 4)
    indices = torch.arange(9)
    lay = SectionLayout("forward", 9, 6, 2, history_positions("forward", 9, 6, 2))
    context, target, _ = build_context(latents, indices, lay, schedule, 0.5, torch.Generator().manual_seed(0))
    base = context.levels[-1]
    assert bool((base.latents[0, :, 0] == 0).all())  # the start anchor stays clean
    assert base.latents[0, :, 1].abs().sum() > 0  # a history frame got noise
    assert bool((target == 0).all())


# -- data -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    config = PRESETS["tiny-test"]
    codec = PixelCodec(4, 4)
    return config, codec, make_source(config, codec)


def test_micro_batches_are_keyed_by_seed_step_and_index(tiny):
    config, codec, source = tiny
    schedule = parse_schedule(config.schedule)
    a = draw_micro_batches(config, source, codec, schedule, 3, 1)
    b = draw_micro_batches(config, source, codec, schedule, 3, 1)
    c = draw_micro_batches(config, source, codec, schedule, 3, 2)
    flat = lambda mbs: torch.cat([mb.target.flatten() for mb in mbs] + [mb.noise.flatten() for mb in mbs])  # noqa: E731
    assert torch.equal(flat(a), flat(b))
    assert not torch.equal(flat(a), flat(c))
    assert sum(len(mb.captions) for mb in a) == config.micro_batch
    for mb in a:
        assert mb.target.shape[1:3] == (codec.latent_channels, config.window)
        assert set(mb.layouts) <= set(LAYOUTS)


def test_sample_window_matches_encoding_the_whole_video(tiny):
    config, codec, source = tiny
    n = config.data.clip_latents
    for seed in range(6):
        latents, indices, _ = sample_window(source, codec, 5, n, torch.Generator().manual_seed(seed))
        usable = codec.num_frames(1 + (source.num_frames - 1) // codec.time_factor)
        whole = codec.encode(source.frames(5, list(range(usable)))[0][None])[0]
        assert indices[0] == 0 and indices.tolist()[1:] == list(range(int(indices[1]), int(indices[1]) + n))
        assert torch.equal(latents, whole[:, indices])


def test_sample_window_renders_only_the_needed_latents(tiny):
    config, codec, source = tiny
    n = config.data.clip_latents
    full, idx_full, _ = sample_window(source, codec, 3, n, torch.Generator().manual_seed(4))
    part, idx_part, _ = sample_window(source, codec, 3, n, torch.Generator().manual_seed(4), needed=2)
    assert part.shape[1] == 3 and torch.equal(part, full[:, :3]) and torch.equal(idx_part, idx_full[:3])


def test_first_section_share_puts_sections_next_to_the_start_frame(tiny):
    config, codec, source = tiny
    schedule = parse_schedule(config.schedule)
    first = config.replace(first_section_share=1.0, layouts=("forward",))
    for step in range(3):
        for mb in draw_micro_batches(first, source, codec, schedule, step, 0):
            assert mb.target_indices[:, 0].tolist() == [1] * len(mb.captions)  # right after frame 0
            for lv in mb.context.levels:  # every frame but the start frame (index 0) is zero padding
                frames = lv.latents.transpose(1, 2)[lv.indices != 0]  # (k, C, h, w)
                assert bool((frames == 0).all())
    mixed = [
        int(mb.target_indices[0, 0])
        for step in range(8)
        for mb in draw_micro_batches(
            config.replace(first_section_share=0.5), source, codec, schedule, step, 0
        )
    ]
    assert 1 in mixed and any(i > 1 for i in mixed)


def test_section_caption_follows_the_timeline():
    codec = PixelCodec(4, 4)
    timeline = [(0.0, "a"), (1.0, "b")]
    assert section_caption(timeline, 1, 3, codec, 30) == "a"  # frames 1..12
    assert section_caption(timeline, 9, 3, codec, 30) == "b"  # frames 33..44


# -- config ---------------------------------------------------------------------------------------


def test_world_source_script_options_reach_the_scripts_and_default_to_training_scripts():
    from framepack.data.world_script import random_script
    from framepack.train.data import WorldSource

    plain, pans = (
        WorldSource(60.0, 16, 30, 3, 12),
        WorldSource(60.0, 16, 30, 3, 12, script_options={"p_hold": 0}),
    )
    seeds = [plain.dataset.clip_seed(i) for i in range(12)]
    assert [plain._script(i) for i in range(12)] == [random_script(s, 60.0, 30) for s in seeds]
    assert all(a.direction != "hold" for i in range(12) for a in pans._script(i).actions)
    assert any(a.direction == "hold" for i in range(12) for a in plain._script(i).actions)
    assert pans.frames(0, [0])[0].shape == (3, 1, 16, 16)


def test_presets_are_valid_and_round_trip_through_json(tmp_path):
    for name, config in PRESETS.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(config.to_dict()))
        assert load_config(path) == config


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"window": 0}, "window"),
        ({"layouts": ("sideways",)}, "layouts"),
        ({"batch_size": 6, "micro_batch": 4}, "batch_size"),
        ({"strategy": "zero3"}, "strategy"),
        ({"lr": 0.0}, "lr"),
        ({"caption_dropout": 1.0}, "caption_dropout"),
        ({"first_section_share": 1.5}, "first_section_share"),
        ({"window": 8, "data": DataConfig(clip_latents=8)}, "clip_latents"),
        ({"cooldown_steps": -1}, "cooldown_steps"),
        ({"steps": 10, "cooldown_steps": 11}, "cooldown_steps"),
    ],
)
def test_config_errors_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**changes)


def test_learning_rate_warms_up_holds_then_cools_down_to_zero():
    from framepack.train.loop import learning_rate

    config = TrainConfig(lr=1.0, warmup_steps=4, steps=20, cooldown_steps=5)
    rates = [learning_rate(config, step) for step in range(config.steps)]
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert rates[4:15] == [1.0] * 11  # stable phase
    assert rates[15:] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])  # linear decay, last step > 0
    # the stable phase does not depend on the run length: a longer run agrees until its cooldown
    longer = config.replace(steps=40)
    assert [learning_rate(longer, s) for s in range(15)] == rates[:15]
    assert learning_rate(config.replace(cooldown_steps=0), 19) == 1.0


def test_config_file_errors_are_user_errors(tmp_path):
    from framepack.errors import UserError

    bad = tmp_path / "bad.json"
    bad.write_text('{"widht": 3}')
    with pytest.raises(UserError, match="widht") as err:
        load_config(bad)
    assert "distill" not in str(err.value)  # the distill hint only for a distillation config
    distill = tmp_path / "distill.json"
    distill.write_text('{"teacher": "bundle"}')
    with pytest.raises(UserError, match="student is its bundle/ folder"):
        load_config(distill)
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.json")


# -- EMA ------------------------------------------------------------------------------------------


def test_ema_beta_halflife_and_rampup():
    assert math.isclose(ema_beta(10**9, 100, 100.0, rampup=None), 0.5)
    assert ema_beta(0, 8, 1000.0) < 1e-6  # ramp-up: the first update copies the weights
    assert ema_beta(100_000, 8, 1000.0) > ema_beta(1000, 8, 1000.0)


def test_ema_moves_toward_the_weights_and_loads_back():
    net = torch.nn.Linear(2, 2)
    ema = EMA(net)
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, beta=0.75)
    assert torch.allclose(ema.state_dict()["weight"], start["weight"] + 0.25)
    other = torch.nn.Linear(2, 2)
    ema.copy_to(other)
    assert torch.equal(other.weight, ema.state_dict()["weight"])


# -- checkpoints ----------------------------------------------------------------------------------


def _adam_after_steps(steps: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=0.1, betas=(0.9, 0.99))
    for i in range(steps):
        opt.zero_grad()
        net(torch.full((2, 3), float(i))).sum().backward()
        opt.step()
    return net, opt


def test_checkpoint_round_trip_continues_identically(tmp_path):
    net, opt = _adam_after_steps(3)
    c = ckpt_mod.Checkpoint(3, net.state_dict(), {"w": torch.ones(2)}, opt.state_dict(), {"samples": 12})
    path = ckpt_mod.save_checkpoint(tmp_path, c)
    assert ckpt_mod.latest_checkpoint(tmp_path) == path
    loaded = ckpt_mod.load_checkpoint(path)
    assert (
        loaded.step == 3 and loaded.state == {"samples": 12} and torch.equal(loaded.ema["w"], torch.ones(2))
    )
    net2, opt2 = _adam_after_steps(0)
    net2.load_state_dict(loaded.model)
    opt2.load_state_dict(loaded.optimizer)
    for model, optimizer in ((net, opt), (net2, opt2)):
        optimizer.zero_grad()
        model(torch.ones(2, 3)).sum().backward()
        optimizer.step()
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)
    assert not list(tmp_path.glob("*.tmp"))


def test_latest_checkpoint_ignores_incomplete_and_prune_keeps_newest(tmp_path):
    net, opt = _adam_after_steps(1)
    for step in (1, 2, 3):
        ckpt_mod.save_checkpoint(
            tmp_path, ckpt_mod.Checkpoint(step, net.state_dict(), {}, opt.state_dict(), {})
        )
    (tmp_path / "step-0000009.safetensors").write_bytes(b"partial")  # killed before its JSON
    assert ckpt_mod.latest_checkpoint(tmp_path).name == "step-0000003.json"
    ckpt_mod.prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["step-0000002.json", "step-0000003.json"]


def test_global_rng_states_round_trip(tmp_path):
    import random

    import numpy as np

    net, opt = _adam_after_steps(1)
    path = ckpt_mod.save_checkpoint(
        tmp_path, ckpt_mod.Checkpoint(1, net.state_dict(), {}, opt.state_dict(), {})
    )
    expected = (torch.rand(3), np.random.rand(3), random.random())
    ckpt_mod.load_checkpoint(path, restore_global_rng=True)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and (expected[1] == again[1]).all() and expected[2] == again[2]


# -- plot -----------------------------------------------------------------------------------------


def test_plot_loss_writes_a_png(tmp_path):
    path = tmp_path / "loss.png"
    plot_loss(list(range(1, 101)), [1.0 / s for s in range(1, 101)], path, size=(320, 200))
    with Image.open(path) as image:
        assert image.size == (320, 200) and image.format == "PNG"
        assert len(image.getcolors(maxcolors=1 << 16)) > 2  # something was drawn
    plot_loss([1], [0.5], path)  # one point: an empty frame, no crash
    assert smooth([1.0, 3.0, 5.0], 2) == [1.0, 2.0, 4.0]


# -- model bundle meta ----------------------------------------------------------------------------


def test_bundle_meta_round_trip_update_and_errors(tmp_path):
    from framepack.errors import UserError
    from framepack.model_bundle import META_NAME, BundleMeta, load_meta, update_meta

    meta = BundleMeta(fps=30, height=32, width=32, window=4, schedule="released-f1", max_latent_index=479)
    (tmp_path / META_NAME).write_text(json.dumps(meta.to_json()))
    assert load_meta(tmp_path) == meta
    changed = update_meta(tmp_path, default_prompt="the camera holds still", model_card={"steps": 3})
    assert load_meta(tmp_path) == changed and changed.default_prompt == "the camera holds still"
    with pytest.raises(UserError, match="not a model bundle"):
        load_meta(tmp_path / "nowhere")
    (tmp_path / META_NAME).write_text(json.dumps({**meta.to_json(), "format": "other"}))
    with pytest.raises(UserError, match="not a framepack bundle"):
        load_meta(tmp_path)
