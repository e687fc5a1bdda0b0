"""Buckets, locating released folders, LoRA merging, VRAM estimate, block streaming, TeaCache."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from hunyuan_fixtures import as_hf_cache, build_transformer_dir

from framepack.errors import UserError
from framepack.hunyuan import buckets, paths
from framepack.hunyuan.memory import (
    estimate_vram,
    on_device,
    parameter_counts,
    released_history_tokens,
    stream_blocks,
)
from framepack.hunyuan.teacache import TeaCache, install_teacache, rescale
from framepack.lora import merge_lora, unmerge_lora
from framepack.models import PRESETS, PackedTransformer
from framepack.packing import PackedContext, PackedLevel
from framepack.video import resize_center_crop

# ----------------------------------------------------------------------------- buckets


def test_official_bucket_choices():
    assert buckets.nearest_bucket(640, 640) == (640, 608)  # ties go to the later bucket, as official
    assert buckets.nearest_bucket(1080, 1920) == (480, 832)  # 16:9
    assert buckets.nearest_bucket(400, 1000) == (416, 960)
    assert buckets.nearest_bucket(1920, 1080) == (832, 480)
    assert buckets.nearest_bucket(480, 832) == (480, 832)
    assert all(h % 16 == 0 and w % 16 == 0 for h, w in buckets.buckets(512))
    with pytest.raises(ValueError, match="resolution"):
        buckets.buckets(650)


@settings(max_examples=40, deadline=None)
@given(st.integers(16, 4000), st.integers(16, 4000))
def test_nearest_bucket_minimises_aspect_error(h, w):
    bh, bw = buckets.nearest_bucket(h, w)
    best = min(abs(h * cw - w * ch) for ch, cw in buckets.OFFICIAL_BUCKETS_640)
    assert abs(h * bw - w * bh) == best


def test_prepare_image_crops_the_bucket():
    """The bucket's crop is `framepack.video.resize_center_crop` (tested against the demo's)."""
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, 140:160] = 255  # a centred white bar survives the crop
    out = resize_center_crop(img, 64, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out[:, 32].mean() > 200 and out[:, 0].mean() < 30
    pixels, bucket = buckets.prepare_image(np.full((300, 500, 3), 255, np.uint8))
    assert bucket == (480, 832) and pixels.shape == (1, 3, 480, 832)
    torch.testing.assert_close(pixels, torch.ones_like(pixels))


# ----------------------------------------------------------------------------- paths


def _layouts(root: Path) -> None:
    build_transformer_dir(root / "FramePackI2V_HY")
    for layout in (paths.HUNYUAN_VIDEO, paths.FLUX_REDUX):
        for sub, names in layout.parts:
            folder = root / layout.name / sub
            folder.mkdir(parents=True)
            for name in names:
                (folder / name.replace("*", "model")).write_text("{}")


def test_locate_plain_and_cache(tmp_path):
    _layouts(tmp_path / "plain")
    found = paths.locate("hunyuan-inverted", tmp_path / "plain")
    assert found.transformer == tmp_path / "plain" / "FramePackI2V_HY"
    assert found.part("vae") == tmp_path / "plain" / "HunyuanVideo" / "vae"
    assert found.part("feature_extractor") == tmp_path / "plain" / "flux_redux_bfl" / "feature_extractor"

    cache = tmp_path / "cache"
    snaps = [
        as_hf_cache(cache, layout.repo_id, tmp_path / "plain" / layout.name)
        for layout in (paths.TRANSFORMER_INVERTED, paths.HUNYUAN_VIDEO, paths.FLUX_REDUX)
    ]
    assert paths.locate("hunyuan-inverted", cache) == paths.ModelPaths(*snaps)
    # A models--org--name folder itself, passed explicitly for one part.
    repo = cache / "models--lllyasviel--FramePackI2V_HY"
    assert paths.locate("hunyuan-inverted", cache, transformer_dir=repo).transformer == snaps[0]


def test_locate_reports_what_and_where(tmp_path):
    _layouts(tmp_path)
    with pytest.raises(UserError, match=r"FramePack_F1_I2V_HY_20250503 .*config\.json.*looked in"):
        paths.locate("hunyuan-f1", tmp_path)
    (tmp_path / "HunyuanVideo" / "text_encoder_2" / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"missing text_encoder_2/\*\.safetensors"):
        paths.locate("hunyuan-inverted", tmp_path)
    with pytest.raises(UserError, match="unknown model"):
        paths.locate("wan", tmp_path)


def test_offline_sets_and_restores_env(monkeypatch):
    import os

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with paths.offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert "HF_HUB_OFFLINE" not in os.environ


# ----------------------------------------------------------------------------- LoRA


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer_blocks = nn.ModuleList([nn.ModuleDict({"to_q": nn.Linear(6, 4)})])
        self.proj_out = nn.Linear(4, 3)
        self.conv = nn.Conv3d(2, 5, (1, 2, 2))


def _lora(rank=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "A": torch.randn(rank, 6, generator=g),
        "B": torch.randn(4, rank, generator=g),
        "down": torch.randn(rank, 4, generator=g),
        "up": torch.randn(3, rank, generator=g),
        "cdown": torch.randn(rank, 2, 1, 2, 2, generator=g),
        "cup": torch.randn(5, rank, 1, 1, 1, generator=g),
    }


def test_lora_diffusers_and_kohya_names_merge_and_unmerge():
    torch.manual_seed(0)
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    f = _lora()
    state = {
        "transformer.transformer_blocks.0.to_q.lora_A.weight": f["A"],
        "transformer.transformer_blocks.0.to_q.lora_B.weight": f["B"],
        "lora_unet_proj_out.lora_down.weight": f["down"],
        "lora_unet_proj_out.lora_up.weight": f["up"],
        "lora_unet_proj_out.alpha": torch.tensor(1.0),
        "lora_unet_conv.lora_down.weight": f["cdown"],
        "lora_unet_conv.lora_up.weight": f["cup"],
        "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": f["down"],
        "something.else": torch.zeros(1),
    }
    applied = merge_lora(model, state, scale=0.5)
    assert applied.modules == ["conv", "proj_out", "transformer_blocks.0.to_q"]
    assert applied.unknown_keys == [
        "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight",
        "something.else",
    ]
    sd = model.state_dict()
    torch.testing.assert_close(
        sd["transformer_blocks.0.to_q.weight"],
        before["transformer_blocks.0.to_q.weight"] + 0.5 * f["B"] @ f["A"],
    )
    torch.testing.assert_close(
        sd["proj_out.weight"], before["proj_out.weight"] + 0.5 * (1.0 / 2) * f["up"] @ f["down"]
    )
    conv_delta = (f["cup"].flatten(1) @ f["cdown"].flatten(1)).reshape(5, 2, 1, 2, 2)
    torch.testing.assert_close(sd["conv.weight"], before["conv.weight"] + 0.5 * conv_delta)
    assert torch.equal(sd["proj_out.bias"], before["proj_out.bias"])
    unmerge_lora(model, applied)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=1e-6)


def test_lora_file_and_errors(tmp_path):
    from safetensors.torch import save_file

    model = Tiny()
    f = _lora()
    save_file(
        {"proj_out.lora_A.weight": f["down"], "proj_out.lora_B.weight": f["up"]}, tmp_path / "l.safetensors"
    )
    assert merge_lora(model, tmp_path / "l.safetensors").modules == ["proj_out"]
    with pytest.raises(UserError, match="does not exist"):
        merge_lora(model, tmp_path / "missing.safetensors")
    with pytest.raises(UserError, match="names a module"):
        merge_lora(model, {"lora_unet_nothing.lora_down.weight": f["down"]})
    with pytest.raises(UserError, match="does not fit"):
        merge_lora(model, {"proj_out.lora_A.weight": f["A"], "proj_out.lora_B.weight": f["B"]})


def test_lora_on_packed_transformer_changes_output():
    torch.manual_seed(0)
    model = PackedTransformer(PRESETS["tiny"]).eval()
    args = _inputs()
    base = model(*args)
    name = "single_transformer_blocks.0.attn.to_q"
    assert name in dict(model.named_modules())
    g = torch.Generator().manual_seed(3)
    lora = {
        f"lora_unet_{name.replace('.', '_')}.lora_down.weight": torch.randn(2, 32, generator=g),
        f"lora_unet_{name.replace('.', '_')}.lora_up.weight": torch.randn(32, 2, generator=g),
    }
    applied = merge_lora(model, lora, scale=1.0)
    assert applied.modules == [name] and not applied.unknown_keys
    assert not torch.allclose(model(*args), base)
    unmerge_lora(model, applied)
    torch.testing.assert_close(model(*args), base, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- memory


def test_vram_estimate_hunyuan_13b():
    config = PRESETS["hunyuan-13b"]
    total, largest = parameter_counts(config)
    assert 12e9 < total < 14e9 and largest < total / 30
    latent_hw = (640 // 8, 608 // 8)
    history = released_history_tokens(latent_hw)
    normal = estimate_vram(config, latent_hw, 9, history, torch.bfloat16, "normal")
    low = estimate_vram(config, latent_hw, 9, history, torch.bfloat16, "low-vram")
    assert normal.total > 25e9 and normal.weights == total * 2
    assert low.total < 6e9 and low.activations == normal.activations
    fp32 = estimate_vram(config, latent_hw, 9, history, torch.float32, "normal")
    assert fp32.weights == 2 * normal.weights
    assert "GiB" in str(low)
    with pytest.raises(ValueError, match="mode"):
        estimate_vram(config, latent_hw, 9, history, mode="fast")


def test_stream_blocks_same_output_and_restores():
    torch.manual_seed(0)
    model = PackedTransformer(PRESETS["tiny"]).eval()
    args = _inputs()
    base = model(*args)
    streamer = stream_blocks(model, "cpu", "cpu")
    out = model(*args)
    assert torch.equal(out, base)
    assert streamer.transfers == len(model.transformer_blocks) + len(model.single_transformer_blocks)
    assert set(model.state_dict()) == set(PackedTransformer(PRESETS["tiny"]).state_dict())
    streamer.remove()
    assert "forward" not in vars(model.transformer_blocks[0])
    assert torch.equal(model(*args), base)


def test_on_device_copies_and_drops():
    """A visit computes on a copy (never the resting weights) and leaves the resting ones in place."""
    m = nn.Linear(2, 2)
    resting = m.weight.data
    with on_device([m], "cpu"):
        assert m.weight.data_ptr() != resting.data_ptr() and torch.equal(m.weight, resting)
    assert m.weight.data_ptr() == resting.data_ptr()


# ----------------------------------------------------------------------------- TeaCache


def _inputs(noise: float = 0.0, seed: int = 0, timestep: float = 500.0):
    cfg = PRESETS["tiny"]
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, cfg.in_channels, 2, 8, 8, generator=g)
    if noise:
        latents = latents + noise * torch.randn(latents.shape)
    context = PackedContext(
        (
            PackedLevel(
                (1, 2, 2), torch.randn(1, cfg.in_channels, 2, 8, 8, generator=g), torch.tensor([[0, 3]])
            ),
        )
    )
    return (
        latents,
        torch.tensor([timestep]),
        torch.randn(1, 5, cfg.text_embed_dim, generator=g),
        torch.ones(1, 5, dtype=torch.bool),
        torch.randn(1, cfg.pooled_projection_dim, generator=g),
        torch.tensor([[1, 2]]),
        context,
        torch.randn(1, 3, cfg.image_proj_dim, generator=g),
        torch.tensor([10000.0]),
    )


def test_teacache_threshold_zero_is_exact():
    torch.manual_seed(0)
    model = PackedTransformer(PRESETS["tiny"]).eval()
    steps = [_inputs(noise=0.01 * i, timestep=1000 - 40 * i) for i in range(6)]
    plain = [model(*a) for a in steps]
    cache = TeaCache(threshold=0.0, num_steps=6)
    handle = install_teacache(model, cache)
    cached = [model(*a) for a in steps]
    assert cache.skipped == 0 and cache.computed == 6
    assert all(torch.equal(p, c) for p, c in zip(plain, cached))
    handle.remove()
    assert "forward" not in vars(model.single_transformer_blocks[0])


def test_teacache_skips_on_slow_change_and_reuses_residual():
    torch.manual_seed(0)
    model = PackedTransformer(PRESETS["tiny"]).eval()
    steps = [_inputs(noise=1e-4 * i, timestep=1000 - 0.01 * i) for i in range(8)]
    plain = [model(*a) for a in steps]
    cache = TeaCache(threshold=0.5, num_steps=8)
    install_teacache(model, cache)
    cached = [model(*a) for a in steps]
    assert cache.skipped > 0 and cache.computed >= 2  # first and last steps always computed
    assert torch.equal(cached[0], plain[0]) and torch.equal(cached[-1], plain[-1])
    for p, c in zip(plain, cached):  # skipped steps approximate the plain output
        torch.testing.assert_close(c, p, rtol=0.05, atol=0.05)
    cache.reset()
    assert cache.step == 0 and cache.residual is None


def test_teacache_rescale_polynomial():
    assert rescale(0.0) == pytest.approx(9.61237896e-02)
    assert rescale(0.1) == pytest.approx(
        np.polyval([7.33226126e02, -4.01131952e02, 6.75869174e01, -3.14987800e00, 9.61237896e-02], 0.1)
    )


def test_gpu_benchmark_cpu_smoke(tmp_path):
    import importlib.util
    import json

    path = Path(__file__).parents[1] / "benchmarks" / "bench_hunyuan_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_hunyuan_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    argv = ["--preset", "tiny", "--device", "cpu", "--bucket", "64", "--window", "2", "--steps", "2"]
    assert bench.main([*argv, "--sections", "1", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert [(r["mode"], r["teacache"]) for r in results] == [
        ("normal", False),
        ("normal", True),
        ("low-vram", False),
        ("low-vram", True),
    ]
    for r in results:  # a section of window 2 adds 8 pixel frames
        assert r["s_per_section"] > 0 and r["s_per_frame"] == pytest.approx(r["s_per_section"] / 8, abs=1e-4)
    assert all(r["teacache_skipped_steps"] is not None for r in results if r["teacache"])
