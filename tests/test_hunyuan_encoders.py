"""Reference checks: our text, image and VAE encodings equal diffusers' HunyuanVideoFramepackPipeline.

Tiny random components are saved in the released layouts (tests/hunyuan_fixtures.py), loaded by
our loaders, and the same objects are handed to a diffusers pipeline whose encode_prompt /
encode_image / prepare_image_latents / vae.decode give the reference.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from hunyuan_fixtures import as_hf_cache, build_hunyuan_dir, build_llama_tokenizer, build_redux_dir

from framepack.conditioning import mix_image_embeds
from framepack.errors import UserError
from framepack.hunyuan.image import SiglipImageEncoder, to_uint8_images
from framepack.hunyuan.text import PROMPT_TEMPLATE, HunyuanPromptEncoder, template_prefix_length
from framepack.hunyuan.vae import HunyuanVideoVAE, overlap_frames
from framepack.writer import soft_append

PROMPTS = ["a cat walks on the grass", "The girl dances gracefully, hello!"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    return build_hunyuan_dir(root / "HunyuanVideo"), build_redux_dir(root / "flux_redux_bfl")


@pytest.fixture(scope="module")
def crop_start():
    return template_prefix_length(build_llama_tokenizer())


@pytest.fixture(scope="module")
def loaded(dirs, crop_start):
    """Our components, loaded with every socket connection forbidden."""
    hunyuan, redux = dirs
    original = socket.socket.connect

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]}")

    socket.socket.connect = refuse
    try:
        text = HunyuanPromptEncoder.from_dir(
            hunyuan, device="cpu", dtype=torch.float32, crop_start=crop_start
        )
        image = SiglipImageEncoder.from_dir(redux, device="cpu", dtype=torch.float32)
        vae = HunyuanVideoVAE.from_dir(hunyuan, device="cpu", dtype=torch.float32)
    finally:
        socket.socket.connect = original
    return text, image, vae


@pytest.fixture(scope="module")
def pipe(loaded):
    from diffusers import HunyuanVideoFramepackPipeline

    text, image, vae = loaded
    return HunyuanVideoFramepackPipeline(
        text_encoder=text.text_encoder,
        tokenizer=text.tokenizer,
        transformer=None,
        vae=vae.vae,
        scheduler=None,
        text_encoder_2=text.text_encoder_2,
        tokenizer_2=text.tokenizer_2,
        image_encoder=image.image_encoder,
        feature_extractor=image.feature_extractor,
    )


def test_prompt_encoding_matches_diffusers(loaded, pipe, crop_start):
    text = loaded[0]
    ours = text.encode(PROMPTS)
    states, pooled, mask = pipe.encode_prompt(
        PROMPTS,
        prompt_template={"template": PROMPT_TEMPLATE, "crop_start": crop_start},
        device=torch.device("cpu"),
        max_sequence_length=256,
    )
    assert ours.states.shape == states.shape == (2, 256, 32)
    assert torch.equal(ours.mask, mask.bool())
    assert 0 < int(ours.mask[0].sum()) < 256 and ours.mask[0].sum() != ours.mask[1].sum()
    assert torch.equal(ours.states[ours.mask], states[mask.bool()])
    assert torch.count_nonzero(ours.states[~ours.mask]) == 0  # padding zeroed, as the official crop
    assert torch.equal(ours.pooled, pooled)


def test_prompt_states_are_layer_minus_three(loaded):
    text = loaded[0]
    ours = text.encode(PROMPTS[:1])
    ids = text.tokenizer(PROMPT_TEMPLATE.format(PROMPTS[0]), return_tensors="pt").input_ids
    hidden = text.text_encoder(input_ids=ids, output_hidden_states=True).hidden_states
    n = int(ours.mask.sum())
    assert n == ids.shape[1] - text.crop_start
    torch.testing.assert_close(ours.states[0, :n], hidden[-3][0, text.crop_start :], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours.states[0, :n], hidden[-1][0, text.crop_start :])


def test_uint8_levels_are_recovered_by_rounding_not_truncation():
    """Known answer: pixels `u / 127.5 - 1` give back every level u; truncating loses 63 of 256."""
    levels = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16, 1).expand(1, 16, 16, 3)
    pixels = levels.permute(0, 3, 1, 2).float() / 127.5 - 1  # as buckets.image_to_tensor
    assert np.array_equal(to_uint8_images(pixels)[0], levels[0].numpy())
    truncated = (((pixels + 1) / 2).numpy() * 255).astype(np.uint8)  # the processor on float input
    assert int((truncated[0, 0] != levels[0, :, :, 0].numpy()).sum()) == 63


def test_image_encoding_is_the_official_uint8_path(loaded, pipe):
    """Our features equal the official demo's (uint8 image to the processor), not diffusers'."""
    image = loaded[1]
    gen = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (2, 48, 40, 3), dtype=torch.uint8, generator=gen)
    pixels = u8.permute(0, 3, 1, 2).float() / 127.5 - 1  # (2, 3, 48, 40), as buckets.image_to_tensor
    ours = image.encode(pixels)
    official = torch.cat(  # the demo's hf_clip_vision_encode, one (H, W, 3) uint8 array at a time
        [
            image.image_encoder(
                **image.feature_extractor.preprocess(images=a.numpy(), return_tensors="pt")
            ).last_hidden_state
            for a in u8
        ]
    )
    assert ours.shape == (2, 16, 24)
    torch.testing.assert_close(ours, official, rtol=0, atol=1e-6)
    assert torch.equal(image.encode(pixels[:, :, None]), ours)  # (B, 3, 1, H, W) accepted
    # diffusers hands the processor floats in [0, 1], which it truncates: a quarter of the levels drop
    truncated = pipe.encode_image(pixels, device=torch.device("cpu"), dtype=torch.float32)
    assert (truncated - official).abs().max() > 1e-3


def test_vae_encode_decode_match_diffusers(loaded, pipe):
    vae = loaded[2]
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 32, 48, generator=gen) * 2 - 1
    ours = vae.encode(image[:, :, None], generator=torch.Generator().manual_seed(7))
    ref = pipe.prepare_image_latents(
        image, dtype=torch.float32, device=torch.device("cpu"), generator=torch.Generator().manual_seed(7)
    )
    assert ours.shape == (1, 4, 1, 4, 6)
    assert torch.equal(ours, ref)
    mean = vae.encode(image[:, :, None])
    assert not torch.equal(mean, ours) and torch.equal(mean, vae.encode(image[:, :, None]))

    latents = torch.randn(1, 4, 3, 4, 6, generator=gen)
    pixels = vae.decode(latents)
    ref_pixels = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    assert pixels.shape == (1, 3, vae.num_frames(3), 32, 48) == (1, 3, 9, 32, 48)
    assert torch.equal(pixels, ref_pixels)
    assert pixels.abs().max() > 1  # not clamped: the official demo clamps only when writing


def test_protocols(loaded):
    from framepack.codecs.base import Codec
    from framepack.text.base import PromptEncoder

    text, _, vae = loaded
    assert isinstance(text, PromptEncoder) and isinstance(vae, Codec)
    assert vae.latent_channels == 4 and (vae.time_factor, vae.space_factor) == (4, 8)
    assert vae.config()["kind"] == "hunyuan-vae" and vae.config()["dtype"] == "float32"


def test_vae_causal_frame_counts_and_switches(loaded):
    vae = loaded[2]
    assert [vae.num_frames(k) for k in (1, 2, 9)] == [1, 5, 33]
    assert [vae.num_latents(f) for f in (1, 5, 6, 33)] == [1, 2, 3, 9]
    video = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert vae.encode(video).shape[2] == 2
    vae.set_tiling(True)
    vae.set_slicing(True)
    assert vae.vae.use_tiling and vae.vae.use_slicing and vae.config()["tiling"]
    vae.set_tiling(False)
    vae.set_slicing(False)
    assert not vae.vae.use_tiling and not vae.vae.use_slicing


def test_loading_from_hf_cache_layout(dirs, tmp_path, crop_start):
    hunyuan, redux = dirs
    from framepack.hunyuan.paths import FLUX_REDUX, HUNYUAN_VIDEO, find

    snap = as_hf_cache(tmp_path / "hub", HUNYUAN_VIDEO.repo_id, hunyuan)
    as_hf_cache(tmp_path / "hub", FLUX_REDUX.repo_id, redux)
    found = find(HUNYUAN_VIDEO, [tmp_path])  # an HF_HOME: hub/models--.../snapshots/<rev>
    assert found == snap
    enc = HunyuanPromptEncoder.from_dir(found, device="cpu", dtype=torch.float32, crop_start=crop_start)
    assert enc.encode(["hello"]).states.shape == (1, 256, 32)
    assert find(FLUX_REDUX, [tmp_path / "hub"]).parent.parent.name == "models--lllyasviel--flux_redux_bfl"


def test_empty_or_missing_tokenizer_is_refused(dirs, tmp_path, crop_start):
    import shutil

    hunyuan, _ = dirs
    broken = tmp_path / "HunyuanVideo"
    shutil.copytree(hunyuan, broken)
    (broken / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(UserError, match=r"tokenizer\.json"):
        HunyuanPromptEncoder.from_dir(broken, device="cpu", crop_start=crop_start)
    # A tokenizer whose vocabulary is empty: the CLIP loader builds one silently from no vocab.
    shutil.rmtree(broken / "tokenizer_2")
    shutil.copytree(hunyuan / "tokenizer", broken / "tokenizer", dirs_exist_ok=True)
    (broken / "tokenizer_2").mkdir()
    (broken / "tokenizer_2" / "tokenizer_config.json").write_text('{"tokenizer_class": "CLIPTokenizer"}')
    with pytest.raises(UserError, match="loaded empty"):
        HunyuanPromptEncoder.from_dir(broken, device="cpu", dtype=torch.float32, crop_start=crop_start)


def test_missing_part_names_expected_files(dirs, tmp_path):
    import shutil

    _, redux = dirs
    broken = tmp_path / "flux"
    shutil.copytree(redux, broken)
    shutil.rmtree(broken / "feature_extractor")
    with pytest.raises(UserError, match=r"feature_extractor/preprocessor_config\.json"):
        SiglipImageEncoder.from_dir(broken, device="cpu")
    with pytest.raises(UserError, match=r"vae/config\.json"):
        HunyuanVideoVAE.from_dir(tmp_path, device="cpu")


def test_crop_start_mismatch_warns(dirs):
    with pytest.warns(UserWarning, match="crop_start"):
        HunyuanPromptEncoder.from_dir(dirs[0], device="cpu", dtype=torch.float32)  # released 95 != tiny


def test_soft_append_linear_crossfade():
    a = torch.zeros(1, 3, 40, 2, 2)
    b = torch.ones(1, 3, 37, 2, 2)
    out = soft_append(a, b, overlap_frames(9))
    assert overlap_frames(9) == 33
    assert out.shape[2] == 40 + 37 - 33
    ramp = out[0, 0, 40 - 33 : 40, 0, 0]
    torch.testing.assert_close(ramp, torch.linspace(0, 1, 33))
    assert torch.equal(out[:, :, :7], a[:, :, :7]) and torch.equal(out[:, :, 40:], b[:, :, 33:])
    assert soft_append(a, b, 0).shape[2] == 77
    with pytest.raises(ValueError, match="overlap"):
        soft_append(a[:, :, :5], b, 33)


def test_mix_image_embeds():
    s, e = torch.zeros(1, 4, 3), torch.ones(1, 4, 3)
    assert torch.equal(mix_image_embeds(s, None), s)
    assert torch.equal(mix_image_embeds(s, e), torch.full((1, 4, 3), 0.5))
    assert torch.equal(mix_image_embeds(s, e, 0.0), s)
    with pytest.raises(ValueError, match="end_weight"):
        mix_image_embeds(s, e, 1.5)


def test_a_pickle_only_vae_is_refused(dirs, tmp_path):
    """Weights load from safetensors only: a folder holding a pickle .bin is never unpickled."""
    import shutil

    from diffusers import AutoencoderKLHunyuanVideo

    hunyuan, _ = dirs
    broken = tmp_path / "hv"
    shutil.copytree(hunyuan, broken)
    vae = AutoencoderKLHunyuanVideo.from_pretrained(broken / "vae")
    shutil.rmtree(broken / "vae")
    vae.save_pretrained(broken / "vae", safe_serialization=False)  # diffusion_pytorch_model.bin
    assert not list((broken / "vae").glob("*.safetensors"))
    with pytest.raises(UserError, match=r"missing vae/\*\.safetensors"):
        HunyuanVideoVAE.from_dir(broken, device="cpu")
