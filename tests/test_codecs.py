"""Tests for framepack.codecs: the Codec contract and the lossless PixelCodec."""

from __future__ import annotations

import importlib
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from framepack.codecs import Codec, PixelCodec, codec_from_config, psnr
from framepack.codecs.pixel import colour_statistics, palette_clips


def _random_clip(frames: int, size: int, seed: int, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=g) * 2 - 1


def test_pixel_codec_satisfies_protocol():
    assert isinstance(PixelCodec(), Codec)


def test_documented_example_shapes():
    x = _random_clip(frames=33, size=64, seed=0, batch=1)
    assert PixelCodec(4, 4).encode(x).shape == (1, 192, 9, 16, 16)
    assert PixelCodec(4, 1).encode(x).shape == (1, 48, 33, 16, 16)
    assert PixelCodec(4, 4).latent_channels == 192
    assert PixelCodec(4, 1).latent_channels == 48


@settings(max_examples=25, deadline=None)
@given(
    space=st.sampled_from([1, 2, 4, 8]),
    time=st.sampled_from([1, 2, 4]),
    latents=st.integers(1, 4),
    hw=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    seed=st.integers(0, 2**16),
)
def test_random_round_trip_is_exact(space, time, latents, hw, seed):
    codec = PixelCodec(space, time)
    frames = codec.num_frames(latents)
    h, w = hw[0] * space, hw[1] * space
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, frames, h, w, generator=g) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (2, 3 * time * space * space, latents, hw[0], hw[1])
    y = codec.decode(z)
    assert y.shape == x.shape
    assert torch.equal(x, y)
    assert psnr(x, y) == math.inf


def test_palette_round_trip_is_exact():
    g = torch.Generator().manual_seed(1)
    x = torch.stack(palette_clips(count=3, frames=9, size=32, generator=g))
    codec = PixelCodec(4, 4)
    assert torch.equal(codec.decode(codec.encode(x)), x)


def test_world_clips_round_trip_is_exact():
    from framepack.data.world_clips import WorldClips

    clips = WorldClips(num_frames=5, size=16, split="eval", length=2)
    x = torch.stack([clips[i]["pixels"] for i in range(2)])
    codec = PixelCodec(4, 4)
    assert torch.equal(codec.decode(codec.encode(x)), x)
    fitted = codec.fit_normalisation([x])
    assert (fitted.decode(fitted.encode(x)) - x).abs().max() < 1e-6


def test_registered_kinds_rebuild():
    from framepack.codecs.base import CODEC_KINDS

    assert {"pixel", "autoencoder", "hunyuan-vae"} <= set(CODEC_KINDS)
    for target in CODEC_KINDS.values():  # every registered factory exists
        module_name, attr_path = target.split(":")
        factory = importlib.import_module(module_name)
        for attr in attr_path.split("."):
            factory = getattr(factory, attr)
        assert callable(factory)
    assert isinstance(codec_from_config({"kind": "pixel", "space_factor": 2, "time_factor": 1}), PixelCodec)


def test_encoding_is_a_rearrangement():
    x = _random_clip(frames=5, size=8, seed=2)
    z = PixelCodec(2, 4).encode(x)
    # the causal first latent holds four copies of frame 0; later latents hold each pixel once
    assert torch.equal(z[:, :, 1:].flatten().sort().values, x[:, :, 1:].flatten().sort().values)
    first = z[:, :, 0].reshape(2, 3, 4, -1)
    for copy in range(4):
        assert torch.equal(first[:, :, copy].flatten().sort().values, x[:, :, 0].flatten().sort().values)


@pytest.mark.parametrize("time", [1, 2, 4])
def test_num_frames_and_num_latents_are_inverse(time):
    codec = PixelCodec(2, time)
    for k in range(1, 20):
        assert codec.num_latents(codec.num_frames(k)) == k
    for f in range(1, 60):
        k = codec.num_latents(f)
        assert codec.num_frames(k) >= f  # covers the frames...
        assert k == 1 or codec.num_frames(k - 1) < f  # ...with the fewest latents
    assert codec.num_frames(9) == (33 if time == 4 else 1 + time * 8)


def test_num_frames_rejects_nonpositive():
    with pytest.raises(ValueError, match="latent_frames"):
        PixelCodec().num_frames(0)
    with pytest.raises(ValueError, match="frames"):
        PixelCodec().num_latents(0)


@pytest.mark.parametrize("time", [2, 4])
def test_causal_prefix(time):
    """Decoding the first k latents gives the first 1 + t(k-1) frames, whatever frames follow."""
    codec = PixelCodec(2, time)
    x = _random_clip(frames=codec.num_frames(4), size=8, seed=3)
    z = codec.encode(x)
    for k in range(1, 5):
        prefix = codec.num_frames(k)
        assert torch.equal(codec.decode(z[:, :, :k]), x[:, :, :prefix])
        # encoding only the prefix gives the same latents: later frames do not leak backwards
        assert torch.equal(codec.encode(x[:, :, :prefix]), z[:, :, :k])


def test_first_latent_copies_are_averaged_on_decode():
    codec = PixelCodec(1, 4)
    z = torch.zeros(1, 12, 1, 1, 1)
    z[0, :, 0, 0, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0] * 3)  # four disagreeing copies per colour
    assert torch.equal(codec.decode(z).flatten(), torch.full((3,), 1.5))


def test_normalisation_is_invertible_and_standardises():
    g = torch.Generator().manual_seed(4)
    clips = palette_clips(count=6, frames=9, size=16, generator=g)
    codec = PixelCodec(4, 4).fit_normalisation(clips[:4])
    x = torch.stack(clips[4:])
    z = codec.encode(x)
    y = codec.decode(z)
    assert (y - x).abs().max() < 1e-6
    assert psnr(x, y) > 120
    fit_latents = codec.encode(torch.stack(clips[:4]))
    per_channel = fit_latents.transpose(0, 1).reshape(codec.latent_channels, -1)
    assert per_channel.mean(1).abs().max() < 0.3
    assert (per_channel.std(1) - 1).abs().max() < 0.3
    # raw mean/std are applied per colour: a constant image maps to known values
    c = codec.with_normalisation((0.5, 0.0, -0.5), (0.25, 0.5, 2.0))
    flat = torch.tensor([0.75, 0.0, 0.5]).view(1, 3, 1, 1, 1).expand(1, 3, 1, 4, 4)
    z = c.encode(flat)
    assert torch.allclose(z.view(1, 3, -1), torch.tensor([1.0, 0.0, 0.5]).view(1, 3, 1))


def test_colour_statistics_known_answer():
    clip = torch.stack([torch.full((2, 2, 2), v) for v in (0.5, -1.0, 0.0)])  # (3, F, H, W)
    clip[2, 0] = 1.0
    clip[2, 1] = -1.0
    mean, std = colour_statistics([clip])
    assert mean == pytest.approx((0.5, -1.0, 0.0))
    assert std[2] == pytest.approx(1.0)


def test_config_round_trip_through_json():
    codec = PixelCodec(2, 4, mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7))
    rebuilt = codec_from_config(json.loads(json.dumps(codec.config())))
    assert rebuilt == codec
    x = _random_clip(frames=5, size=4, seed=5)
    assert torch.equal(rebuilt.encode(x), codec.encode(x))


def test_codec_from_config_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        codec_from_config({"kind": "nope"})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"space_factor": 0}, "space_factor"),
        ({"time_factor": 1.5}, "time_factor"),
        ({"std": (1.0, 0.0, 1.0)}, "std"),
        ({"mean": (0.0, 0.0)}, "mean"),
    ],
)
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PixelCodec(**kwargs)


def test_bad_shapes_are_rejected():
    codec = PixelCodec(4, 4)
    with pytest.raises(ValueError, match="frame count"):
        codec.encode(_random_clip(frames=6, size=8, seed=0))
    with pytest.raises(ValueError, match="multiples"):
        codec.encode(_random_clip(frames=5, size=6, seed=0))
    with pytest.raises(ValueError, match="latents"):
        codec.decode(torch.zeros(1, 48, 2, 2, 2))


def test_bfloat16_round_trip_keeps_dtype():
    x = _random_clip(frames=5, size=8, seed=6).bfloat16()
    codec = PixelCodec(2, 4)
    z = codec.encode(x)
    assert z.dtype == torch.bfloat16
    assert torch.equal(codec.decode(z), x)
