"""Saving and loading the packed transformer in the diffusers directory format."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from framepack.models import PRESETS, PackedTransformer
from framepack.models.io import INDEX_NAME, WEIGHTS_NAME, parse_size
from framepack.packing import PackedContext, PackedLevel

CONFIG = PRESETS["tiny"]


def _model(seed: int = 0, config=CONFIG) -> PackedTransformer:
    torch.manual_seed(seed)  # test-only: deterministic init
    model = PackedTransformer(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model


def _same_weights(a: PackedTransformer, b: PackedTransformer) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _call(model: PackedTransformer, seed: int = 1) -> torch.Tensor:
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    c = cfg.in_channels
    context = PackedContext(
        (
            PackedLevel((2, 4, 4), torch.randn(1, c, 2, 8, 8, generator=g), torch.tensor([[6, 7]])),
            PackedLevel((1, 2, 2), torch.randn(1, c, 1, 8, 8, generator=g), torch.tensor([[0]])),
        )
    )
    with torch.no_grad():
        return model(
            torch.randn(1, c, 2, 8, 8, generator=g),
            torch.tensor([500.0]),
            torch.randn(1, 5, cfg.text_embed_dim, generator=g),
            torch.ones(1, 5, dtype=torch.bool),
            torch.randn(1, cfg.pooled_projection_dim, generator=g),
            torch.tensor([[1, 2]]),
            context=context,
            image_embeds=torch.randn(1, 2, cfg.image_proj_dim, generator=g),
            guidance=torch.tensor([10000.0]),
        )


def test_round_trip_single_file(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "HunyuanVideoFramepackTransformer3DModel"
    assert "clean_kernels" not in config  # default kernels: pure diffusers config
    assert (tmp_path / WEIGHTS_NAME).is_file() and not (tmp_path / INDEX_NAME).exists()
    loaded = PackedTransformer.from_pretrained(tmp_path)
    assert loaded.config == model.config
    assert _same_weights(loaded, model)
    # Equal weights; outputs may differ in the last bit (memory alignment picks SIMD paths).
    torch.testing.assert_close(_call(loaded), _call(model), rtol=1e-6, atol=1e-6)


def test_round_trip_sharded_with_extra_level(tmp_path):
    model = _model()
    model.add_clean_level((8, 16, 16))
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and shards[0] == f"diffusion_pytorch_model-00001-of-{len(shards):05d}.safetensors"
    assert "clean_x_embedder.proj_8x.weight" in index["weight_map"]
    assert json.loads((tmp_path / "config.json").read_text())["clean_kernels"][-1] == [8, 16, 16]
    loaded = PackedTransformer.from_pretrained(tmp_path)
    assert loaded.config.clean_kernels == model.config.clean_kernels
    assert _same_weights(loaded, model)


def test_load_casts_dtype(tmp_path):
    _model().save_pretrained(tmp_path)
    loaded = PackedTransformer.from_pretrained(tmp_path, dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert not any(p.is_meta for p in loaded.parameters())


def test_loads_diffusers_sharded_checkpoint(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.HunyuanVideoFramepackTransformer3DModel(
        in_channels=CONFIG.in_channels,
        out_channels=CONFIG.out_channels,
        num_attention_heads=CONFIG.num_attention_heads,
        attention_head_dim=CONFIG.attention_head_dim,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        text_embed_dim=CONFIG.text_embed_dim,
        pooled_projection_dim=CONFIG.pooled_projection_dim,
        rope_axes_dim=CONFIG.rope_axes_dim,
        has_image_proj=True,
        image_proj_dim=CONFIG.image_proj_dim,
        has_clean_x_embedder=True,
    )
    reference.save_pretrained(tmp_path, max_shard_size="30KB")
    assert (tmp_path / INDEX_NAME).is_file()
    loaded = PackedTransformer.from_pretrained(tmp_path)
    assert loaded.config == CONFIG
    ours = PackedTransformer(CONFIG).eval()
    ours.load_state_dict(reference.state_dict())
    assert _same_weights(loaded, ours)
    torch.testing.assert_close(_call(loaded), _call(ours), rtol=1e-6, atol=1e-6)


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    _model().save_pretrained(tmp_path)
    weights = load_file(tmp_path / WEIGHTS_NAME)
    weights["proj_out.bias"] = torch.zeros(3)
    save_file(weights, tmp_path / WEIGHTS_NAME)
    with pytest.raises(ValueError, match=r"proj_out\.bias.*\(3,\).*\(16,\)"):
        PackedTransformer.from_pretrained(tmp_path)


def test_missing_and_unexpected_keys(tmp_path):
    _model().save_pretrained(tmp_path)
    weights = load_file(tmp_path / WEIGHTS_NAME)
    del weights["norm_out.linear.weight"]
    save_file(weights, tmp_path / WEIGHTS_NAME)
    with pytest.raises(ValueError, match=r"norm_out\.linear\.weight"):
        PackedTransformer.from_pretrained(tmp_path)
    weights["norm_out.linear.weight"] = torch.zeros(64, 32)
    weights["clean_x_embedder.proj_9x.weight"] = torch.zeros(1)
    save_file(weights, tmp_path / WEIGHTS_NAME)
    with pytest.raises(ValueError, match=r"proj_9x"):
        PackedTransformer.from_pretrained(tmp_path)


def test_missing_files_name_expected_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        PackedTransformer.from_pretrained(tmp_path)
    _model().save_pretrained(tmp_path)
    (tmp_path / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(WEIGHTS_NAME)):
        PackedTransformer.from_pretrained(tmp_path)


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("64KiB") == 64 * 1024
    assert parse_size(123) == 123
    with pytest.raises(ValueError, match="max_shard_size"):
        parse_size("lots")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"metadata": {}}', "is not a safetensors index"),
        ('{"weight_map": ["a", "b"]}', "is not a safetensors index"),
        ('{"weight_map": {"x": 3}}', "is not a safetensors index"),
        ('["weight_map"]', "is not a safetensors index"),
    ],
)
def test_a_malformed_index_is_one_line(tmp_path, text, message):
    """A damaged `...safetensors.index.json` in a model folder: one line naming the file, no
    traceback, also through the released models' loader (its UserError)."""
    from framepack.errors import UserError
    from framepack.hunyuan.components import _load_transformer

    _model().save_pretrained(tmp_path, max_shard_size="20KB")
    (tmp_path / INDEX_NAME).write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        PackedTransformer.from_pretrained(tmp_path)
    assert str(tmp_path / INDEX_NAME) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match=f"could not load the FramePack transformer .*{message}") as err:
        _load_transformer(tmp_path, torch.float32)
    assert "\n" not in str(err.value)
