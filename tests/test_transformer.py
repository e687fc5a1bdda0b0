"""PackedTransformer: config, token layout, schedules diffusers cannot express, switches."""

from __future__ import annotations

import logging

import pytest
import torch

from framepack.models import PRESETS, PackedTransformer, TransformerConfig, projection_name
from framepack.models.attention import get_attention
from framepack.packing import PackedContext, PackedLevel
from framepack.rope import rope_tables

TINY = PRESETS["tiny"]
KERNELS_5 = ((1, 2, 2), (2, 4, 4), (4, 8, 8), (8, 16, 16), (1, 4, 4))


def _model(config: TransformerConfig = TINY, seed: int = 0) -> PackedTransformer:
    torch.manual_seed(seed)  # test-only: deterministic init
    model = PackedTransformer(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    return model


def _conditions(config: TransformerConfig, batch: int, g: torch.Generator, image: bool = True) -> dict:
    return dict(
        timestep=torch.full((batch,), 600.0),
        text_states=torch.randn(batch, 5, config.text_embed_dim, generator=g),
        text_mask=torch.ones(batch, 5, dtype=torch.bool),
        pooled_text=torch.randn(batch, config.pooled_projection_dim, generator=g),
        image_embeds=torch.randn(batch, 2, config.image_proj_dim, generator=g) if image else None,
        guidance=torch.full((batch,), 10000.0) if config.guidance_embeds else None,
    )


def _level(kernel, frames, g, batch=1, channels=4, size=8):
    indices = torch.as_tensor(frames, dtype=torch.int64)[None].expand(batch, -1)
    return PackedLevel(kernel, torch.randn(batch, channels, len(frames), size, size, generator=g), indices)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"rope_axes_dim": (4, 6, 4)}, "rope_axes_dim"),
        ({"patch_size_t": 2}, "patch_size_t"),
        ({"clean_kernels": ((1, 2, 2), (1, 2, 2))}, "clean_kernels"),
        ({"clean_kernels": ((1, 3, 3),)}, "clean_kernels"),
        ({"qk_norm": "layer_norm"}, "qk_norm"),
        ({"num_attention_heads": 0}, "num_attention_heads"),
    ],
)
def test_config_validation_names_field(changes, field):
    with pytest.raises(ValueError, match=field):
        TINY.replace(**changes)


def test_projection_names():
    assert projection_name((1, 2, 2)) == "proj"
    assert projection_name((2, 4, 4)) == "proj_2x"
    assert projection_name((8, 16, 16)) == "proj_8x"
    assert projection_name((1, 4, 4)) == "proj_1_4_4"


def test_released_preset_has_released_size_and_names():
    config = PRESETS["hunyuan-13b"]
    with torch.device("meta"):
        model = PackedTransformer(config)
    params = sum(p.numel() for p in model.parameters())
    assert 12.5e9 < params < 13.5e9  # "about 13B" (SPEC sec. 5)
    names = model.state_dict().keys()
    for key in (
        "clean_x_embedder.proj.weight",
        "clean_x_embedder.proj_2x.weight",
        "clean_x_embedder.proj_4x.weight",
    ):
        assert key in names
    assert model.state_dict()["image_projection.up.weight"].shape == (3 * 3072, 1152)


def test_config_dict_round_trip_keeps_custom_kernels():
    config = TINY.replace(clean_kernels=KERNELS_5, in_channels=48, out_channels=48)
    restored, ignored = TransformerConfig.from_dict({**config.to_dict(), "_class_name": "x", "future_key": 1})
    assert restored == config and ignored == ["future_key"]


# ----------------------------------------------------------------------------- layout


def test_token_counts_and_positions_for_five_levels():
    """Levels (8,16,16), (4,8,8), (1,4,4), (2,4,4), (1,2,2): tokens and pooled RoPE per level."""
    model = _model(TINY.replace(clean_kernels=KERNELS_5))
    g = torch.Generator().manual_seed(0)
    spec = [((8, 16, 16), list(range(20, 29))), ((4, 8, 8), [29, 30, 31]), ((1, 4, 4), [32, 33])]
    spec += [((2, 4, 4), [34, 35, 36]), ((1, 2, 2), [0, 37])]
    context = PackedContext(tuple(_level(k, f, g, size=12) for k, f in spec))
    latents = torch.randn(1, 4, 3, 12, 12, generator=g)
    noisy_idx = torch.tensor([[38, 39, 40]])
    tokens, cos, _, n_noisy = model.embed_video(latents, noisy_idx, context)
    expected = [-(-len(f) // k[0]) * -(-12 // k[1]) * -(-12 // k[2]) for k, f in spec]
    assert expected == [2 * 1 * 1, 1 * 2 * 2, 2 * 3 * 3, 2 * 3 * 3, 2 * 6 * 6]
    assert n_noisy == 3 * 6 * 6 and tokens.shape == (1, sum(expected) + n_noisy, TINY.inner_dim)
    start = 0
    for (kernel, frames), count in zip(spec, expected):
        window = (kernel[0], kernel[1] // 2, kernel[2] // 2)
        table, _ = rope_tables(torch.tensor([frames]), 6, 6, TINY.rope_axes_dim, TINY.rope_theta, window)
        torch.testing.assert_close(cos[:, start : start + count], table)
        start += count
    noisy_table, _ = rope_tables(noisy_idx, 6, 6, TINY.rope_axes_dim, TINY.rope_theta)
    torch.testing.assert_close(cos[:, start:], noisy_table)


def test_context_frames_matter_and_absent_levels_do_not():
    """Symmetric schedule (past and future levels, Sec. 2) with an 8x level."""
    model = _model(TINY.replace(clean_kernels=KERNELS_5))
    g = torch.Generator().manual_seed(1)
    levels = [
        _level((8, 16, 16), list(range(0, 8)), g, size=16),
        _level((2, 4, 4), [8, 9], g, size=16),
        _level((1, 2, 2), [10], g, size=16),
        _level((1, 2, 2), [14], g, size=16),  # future side
        _level((2, 4, 4), [15, 16], g, size=16),
    ]
    latents = torch.randn(1, 4, 3, 16, 16, generator=g)
    cond = _conditions(model.config, 1, g)

    def run(context):
        with torch.no_grad():
            return model(latents, latent_indices=torch.tensor([[11, 12, 13]]), context=context, **cond)

    base = run(PackedContext(tuple(levels)))
    # An empty level, or leaving it out entirely, adds nothing.
    empty = _level((4, 8, 8), [], g, size=16)
    torch.testing.assert_close(run(PackedContext((empty, *levels))), base, rtol=1e-5, atol=1e-6)
    # Every placed frame changes the output, including the 8x-compressed past and the future.
    for i, level in enumerate(levels):
        changed = PackedLevel(level.kernel, level.latents + 0.5, level.indices)
        out = run(PackedContext((*levels[:i], changed, *levels[i + 1 :])))
        assert (out - base).abs().max() > 1e-4, level.kernel
    # Dropping the future levels changes it too; no context at all still runs.
    assert (run(PackedContext(tuple(levels[:3]))) - base).abs().max() > 1e-4
    assert run(None).shape == latents.shape
    assert run(PackedContext(())).shape == latents.shape


def test_batch_rows_are_independent_with_own_indices_and_padding():
    model = _model()
    g = torch.Generator().manual_seed(2)
    rows = []
    for frames, valid in (([0, 1], 5), ([3, 7], 2)):
        cond = _conditions(model.config, 1, g)
        cond["text_mask"][:, valid:] = False
        level = _level((2, 4, 4), [frames[0] - 2, frames[0] - 1], g)
        rows.append((torch.randn(1, 4, 2, 8, 8, generator=g), torch.tensor([frames]), level, cond))
    with torch.no_grad():
        singles = [model(x, latent_indices=ix, context=PackedContext((lv,)), **c) for x, ix, lv, c in rows]
        cat = {k: torch.cat([r[3][k] for r in rows]) for k in rows[0][3]}
        context = PackedContext(
            (
                PackedLevel(
                    (2, 4, 4),
                    torch.cat([r[2].latents for r in rows]),
                    torch.cat([r[2].indices for r in rows]),
                ),
            )
        )
        batched = model(
            torch.cat([r[0] for r in rows]),
            latent_indices=torch.cat([r[1] for r in rows]),
            context=context,
            **cat,
        )
    torch.testing.assert_close(batched, torch.cat(singles), rtol=1e-5, atol=1e-5)


def test_models_without_image_tokens_or_guidance_and_wide_latents():
    config = TINY.replace(has_image_proj=False, guidance_embeds=False, in_channels=48, out_channels=48)
    model = _model(config)
    g = torch.Generator().manual_seed(3)
    cond = _conditions(config, 2, g, image=False)
    latents = torch.randn(2, 48, 2, 4, 4, generator=g)
    context = PackedContext((_level((1, 2, 2), [0], g, batch=2, channels=48, size=4),))
    with torch.no_grad():
        out = model(latents, latent_indices=torch.tensor([[1, 2], [1, 2]]), context=context, **cond)
    assert out.shape == latents.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="has_image_proj"):
        model(
            latents,
            latent_indices=torch.tensor([[1, 2]] * 2),
            **{**cond, "image_embeds": torch.zeros(2, 1, 24)},
        )
    guided = _model()
    with pytest.raises(ValueError, match="guidance"):
        guided(
            torch.randn(1, 4, 1, 4, 4),
            latent_indices=torch.tensor([[0]]),
            **{**_conditions(TINY, 1, g), "guidance": None},
        )


def test_unknown_level_kernel_is_rejected():
    model = _model()
    g = torch.Generator().manual_seed(4)
    context = PackedContext((_level((8, 16, 16), [0], g, size=16),))
    with pytest.raises(ValueError, match=r"\(8, 16, 16\).*add_clean_level"):
        model(
            torch.randn(1, 4, 1, 16, 16),
            latent_indices=torch.tensor([[1]]),
            context=context,
            **_conditions(TINY, 1, g),
        )


# ----------------------------------------------------------------------------- new levels and switches


def test_added_level_reproduces_source_on_upsampled_input():
    """proj_2x init = repeat(proj, 2,2,2) / 8: on a nearest-upsampled input it equals the source."""
    model = _model()
    model.add_clean_level((2, 8, 8), init_from=(1, 2, 2))
    assert model.config.clean_kernels[-1] == (2, 8, 8)
    embed = model.clean_x_embedder
    x = torch.randn(1, 4, 1, 2, 2, generator=torch.Generator().manual_seed(5))
    upsampled = x.repeat_interleave(2, 2).repeat_interleave(4, 3).repeat_interleave(4, 4)  # (1, 4, 2, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(embed(upsampled, (2, 8, 8)), embed(x, (1, 2, 2)), rtol=1e-5, atol=1e-6)
    model.add_clean_level((8, 16, 16))  # default source: largest dividing kernel (4, 8, 8)
    w4, w8 = embed.proj_4x.weight, embed.proj_8x.weight
    torch.testing.assert_close(w8[:, :, ::2, ::2, ::2] * 8, w4)
    with pytest.raises(ValueError, match="already"):
        model.add_clean_level((2, 4, 4))


def test_gradient_checkpointing_gives_same_gradients():
    g = torch.Generator().manual_seed(6)
    cond = _conditions(TINY, 1, g)
    latents = torch.randn(1, 4, 2, 4, 4, generator=g)
    grads = []
    for flag in (False, True):
        model = _model(seed=7).train()
        model.enable_gradient_checkpointing(flag)
        model(latents, latent_indices=torch.tensor([[0, 1]]), **cond).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])


def test_unavailable_backend_logs_once_and_falls_back(caplog, monkeypatch):
    import importlib

    def missing(name, *args):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(importlib, "import_module", missing)
    get_attention.cache_clear()
    model = _model()
    g = torch.Generator().manual_seed(8)
    cond = _conditions(TINY, 1, g)
    latents = torch.randn(1, 4, 1, 4, 4, generator=g)
    with torch.no_grad():
        expected = model(latents, latent_indices=torch.tensor([[0]]), **cond)
        with caplog.at_level(logging.WARNING, logger="framepack.models.attention"):
            model.set_attention_backend("flash")
            model.set_attention_backend("flash")
            out = model(latents, latent_indices=torch.tensor([[0]]), **cond)
    get_attention.cache_clear()
    assert [r.getMessage() for r in caplog.records if "flash" in r.getMessage()].__len__() == 1
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="attention_backend"):
        model.set_attention_backend("magic")


def test_output_mlp_starts_as_the_linear_head(tmp_path):
    """add_output_mlp keeps the output bit for bit, saves and loads, and its zero layer trains."""
    g = torch.Generator().manual_seed(8)
    cond = _conditions(TINY, 1, g)
    latents = torch.randn(1, 4, 2, 8, 8, generator=g)
    idx = torch.tensor([[0, 1]])
    model = _model()
    with torch.no_grad():
        before = model(latents, latent_indices=idx, **cond)
        model.add_output_mlp(64)
        assert torch.equal(model(latents, latent_indices=idx, **cond), before)
    with pytest.raises(ValueError, match="already"):
        model.add_output_mlp(64)
    assert model.config.head_hidden == 64 and "head_hidden" not in TINY.to_dict()
    model.save_pretrained(tmp_path)
    loaded = PackedTransformer.from_pretrained(tmp_path)
    assert loaded.config.head_hidden == 64
    # The zero last layer still gets a gradient, so training moves the head off the linear one.
    model.train()
    model(latents, latent_indices=idx, **cond).square().mean().backward()
    assert model.proj_out_mlp[2].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- bf16 as the official demo


def _bf16_run() -> dict[str, torch.Tensor]:
    """A bf16 tiny model called as the pipeline calls it (fp32 guidance 10 * 1000).

    Returns its output, the output-norm tokens (B, S, D) and the guidance embedder's input.
    """
    model = _model().to(torch.bfloat16)
    g = torch.Generator().manual_seed(12)
    cond = {
        k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in _conditions(TINY, 1, g).items()
    }
    cond["guidance"] = torch.full((1,), 10 * 1000.0)  # float32, as Job.sample_section builds it
    seen = {"model": model}
    model.norm_out.register_forward_hook(lambda module, args, out: seen.__setitem__("normed", out))
    model.time_text_embed.guidance_embedder.register_forward_pre_hook(
        lambda module, args: seen.__setitem__("guidance_features", args[0])
    )
    latents = torch.randn(1, 4, 2, 8, 8, generator=g).to(torch.bfloat16)
    with torch.no_grad():
        seen["out"] = model(latents, latent_indices=torch.tensor([[0, 1]]), **cond)
    return seen


def test_bf16_guidance_goes_through_bf16_as_released():
    """The released sampler builds `distilled_guidance` in bf16: 10000 becomes 9984."""
    from framepack.models.blocks import timestep_features

    features = _bf16_run()["guidance_features"]
    assert torch.tensor(10000.0).bfloat16().item() == 9984.0
    assert torch.equal(features, timestep_features(torch.tensor([9984.0])).bfloat16())
    assert not torch.equal(features, timestep_features(torch.tensor([10000.0])).bfloat16())


def test_bf16_output_projection_runs_in_float32():
    """proj_out on the bf16 norm output, in fp32 (the demo's high_quality_fp32_output_for_inference)."""
    run = _bf16_run()
    out, normed, model = run["out"], run["normed"], run["model"]
    assert normed.dtype == torch.bfloat16 and out.dtype == torch.float32
    w, b = model.proj_out.weight, model.proj_out.bias
    fp32 = normed.float() @ w.float().T + b.float()  # (1, T*h'*w', p*p*C) = (1, 32, 16)
    bf16 = (normed @ w.T + b).float()  # the old path: the velocity rounded to bf16
    # unpatchify 'b (t h w) (c ph pw) -> b c t (h ph) (w pw)' with t=2, h=w=4, p=2, c=4
    tokens = out.reshape(1, 4, 2, 4, 2, 4, 2).permute(0, 2, 3, 5, 1, 4, 6).reshape(1, 32, 16)
    torch.testing.assert_close(tokens, fp32, rtol=0, atol=1e-6)
    assert (tokens - bf16).abs().max() > 1e-3  # the two differ: this test can fail


def test_output_tokens_invert_the_unpatchify():
    """The head's skip reads token k's own input values: _tokens is the output reshape's inverse."""
    model = _model()
    latents = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    tokens = model._tokens(latents)  # (B, T*h'*w', C*p*p)
    b, t, h, w, p = 2, 3, 8, 8, 2
    back = (
        tokens.reshape(b, t, h // p, w // p, -1, 1, p, p)
        .permute(0, 4, 1, 5, 2, 6, 3, 7)
        .reshape(b, -1, t, h, w)
    )
    assert torch.equal(back, latents)
