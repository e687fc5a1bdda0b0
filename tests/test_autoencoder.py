"""The learned causal video autoencoder (issue 20): causality, the first frame alone, save/load,
its trainer (exact resume, one-line refusals), its card's measures, a bundle that carries it,
and the latent cache a model on its latents trains from."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from framepack.codecs.autoencoder import AutoencoderCodec, AutoencoderConfig, VideoAutoencoder
from framepack.codecs.autoencoder_train import CodecTrainConfig, draw_batch, train_codec
from framepack.codecs.base import Codec, codec_from_config
from framepack.data.world import World, render_clip
from framepack.data.world_script import parse_script
from framepack.errors import UserError
from framepack.eval.codec import codec_card, motion_matches

TINY_MODEL = {"latent_channels": 4, "width": 16, "frame_width": 8, "blocks": 1}
TINY = CodecTrainConfig(
    model=TINY_MODEL, size=16, batch_size=2, steps=4, warmup=1, cooldown=2, log_every=1, checkpoint_every=2
)


def _codec(seed: int = 0, style: str = "dc") -> AutoencoderCodec:
    torch.manual_seed(seed)
    model = VideoAutoencoder(AutoencoderConfig(**TINY_MODEL, style=style))
    return AutoencoderCodec(model, scaling_factor=1.7)


@pytest.mark.parametrize("style", ["dc", "conv"])
def test_shapes_and_the_causal_frame_count(style):
    codec = _codec(style=style)
    assert isinstance(codec, Codec) and (codec.time_factor, codec.space_factor) == (4, 8)
    x = torch.rand(2, 3, 9, 16, 16) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (2, 4, 3, 2, 2)
    assert codec.num_frames(3) == 9 and codec.num_latents(9) == 3 and codec.num_latents(10) == 4
    y = codec.decode(z)
    assert y.shape == x.shape and y.abs().max() <= 1
    with pytest.raises(ValueError, match="1 \\+ 4 k frames"):
        codec.encode(x[:, :, :8])


@pytest.mark.parametrize("style", ["dc", "conv"])
def test_a_latent_never_reads_frames_after_its_group_and_the_first_frame_is_alone(style):
    codec = _codec(style=style)
    x = torch.rand(1, 3, 13, 16, 16) * 2 - 1
    z = codec.encode(x)
    later = x.clone()
    later[:, :, 6:] = torch.rand_like(later[:, :, 6:])  # frames of group 2 (5..8) from frame 6 on
    z2 = codec.encode(later)
    assert torch.allclose(z[:, :, :2], z2[:, :, :2], atol=1e-6) and not torch.allclose(
        z[:, :, 2], z2[:, :, 2]
    )
    # the start image alone = latent 0 (to float rounding: a batch of another size)
    assert torch.allclose(codec.encode(x[:, :, :1]), z[:, :, :1], atol=1e-5)
    # decoding: group t reads latents t and t - 1 only
    y = codec.decode(z)
    z3 = z.clone()
    z3[:, :, 2] += 1.0
    y3 = codec.decode(z3)
    assert torch.allclose(y[:, :, :5], y3[:, :, :5], atol=1e-6) and not torch.allclose(
        y[:, :, 5:], y3[:, :, 5:]
    )


def test_save_load_round_trip_and_a_damaged_folder_is_one_line(tmp_path):
    codec = _codec()
    codec.save(tmp_path / "ae")
    loaded = codec_from_config({"kind": "autoencoder", "path": str(tmp_path / "ae")})
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    assert torch.equal(loaded.encode(x), codec.encode(x)) and loaded.scaling_factor == 1.7
    (tmp_path / "ae" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="damaged"):
        AutoencoderCodec.load(tmp_path / "ae")
    with pytest.raises(UserError, match="no autoencoder"):
        AutoencoderCodec.load(tmp_path / "nothing")


def test_config_validation():
    with pytest.raises(ValueError, match="space_factor must be 8"):
        AutoencoderConfig(space_factor=4)
    with pytest.raises(ValueError, match="width"):
        AutoencoderConfig(width=0)
    with pytest.raises(ValueError, match="multiple of latent_channels"):
        AutoencoderConfig(width=20, latent_channels=16)
    with pytest.raises(ValueError, match="style"):
        AutoencoderConfig(style="vq")
    with pytest.raises(ValueError, match="speed_range"):
        CodecTrainConfig(speed_range=(5.0, 1.0))
    with pytest.raises(ValueError, match="unknown codec training settings"):
        CodecTrainConfig.from_dict({"stepz": 3})


def test_training_data_pans_at_any_speed_and_is_deterministic():
    config = dataclasses.replace(TINY, batch_size=3)
    a, b = draw_batch(config, 5), draw_batch(config, 5)
    assert torch.equal(a, b) and a.shape == (3, 3, 9, 16, 16) and not torch.equal(a, draw_batch(config, 6))


def test_training_improves_the_held_out_reconstruction(tmp_path):
    config = dataclasses.replace(TINY, lr=3e-3, cooldown=0, checkpoint_every=40)
    before = train_codec(tmp_path / "a", dataclasses.replace(config, steps=1)).card["psnr"]
    after = train_codec(tmp_path / "b", dataclasses.replace(config, steps=40)).card["psnr"]
    assert after > before + 1.0, (before, after)


def test_resume_continues_the_exact_run(tmp_path):
    straight = train_codec(tmp_path / "a", TINY, progress=None)

    def stop_at_3(step: int, total: int, row: dict) -> None:
        if step == 3:  # after the step-2 checkpoint and step 3's log row: a kill
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_codec(tmp_path / "b", TINY, progress=stop_at_3)
    resumed = train_codec(tmp_path / "b", resume=True)
    assert resumed.card["training"]["steps"] == 4
    for (k, v), (_, w) in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert torch.equal(v, w), k
    rows = [json.loads(r) for r in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    card = json.loads((tmp_path / "a" / "codec" / "config.json").read_text())["card"]
    assert {"psnr", "sharpness_ratio", "motion_kept", "encode_s_per_video_s", "decode_s_per_video_s"} <= set(
        card
    )
    with pytest.raises(UserError, match="not empty"):
        train_codec(tmp_path / "a", TINY)
    with pytest.raises(UserError, match="no codec training run"):
        train_codec(tmp_path / "c", resume=True)


def test_cli_trains_and_refuses_bad_input_in_one_line(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(dataclasses.replace(TINY, steps=2).to_dict()))
    run = [sys.executable, "-m", "framepack", "codec"]
    ok = subprocess.run(
        [*run, "train", "--out", str(tmp_path / "r"), "--config", str(cfg), "--quiet"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "r" / "codec" / "model.safetensors").is_file()
    bad = tmp_path / "bad.json"
    for text, needle in (("{", "cannot read JSON"), ('{"lr": -1}', "lr must be"), ("[1]", "JSON object")):
        bad.write_text(text)
        out = subprocess.run(
            [*run, "train", "--out", str(tmp_path / "x"), "--config", str(bad)],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 2 and needle in out.stderr and len(out.stderr.strip().splitlines()) == 1, (
            out.stderr
        )
    again = subprocess.run(
        [*run, "train", "--out", str(tmp_path / "r"), "--config", str(cfg)], capture_output=True, text=True
    )
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr


def _pan(speed: str, frames: int = 17, size: int = 64) -> torch.Tensor:
    clip = render_clip(World(3), parse_script(f"right 2 {speed}", (100, 37)), size, 30, frames)
    return torch.from_numpy(clip.frames)


def test_motion_matches_sees_a_codec_that_steps_once_per_latent():
    truth = _pan("steadily").numpy()  # 3 px per frame
    assert motion_matches(truth, truth).all()
    stepped = truth.copy()
    for g in range(1, len(truth), 4):  # every frame of a group shows the group's last frame
        stepped[g : g + 4] = truth[min(g + 3, len(truth) - 1)]
    # three pairs in four stand still and the fourth jumps by a whole latent's motion: none match
    assert motion_matches(truth, stepped).mean() < 0.1
    still = np.repeat(truth[:1], len(truth), axis=0)
    assert motion_matches(still, still).all()


def test_codec_card_measures_a_codec(tmp_path):
    card = codec_card(_codec(), clips=2, seconds=0.3, size=16)
    assert card["frames"] == 9 and card["latent_shape"] == [4, 3, 2, 2]
    assert 0 < card["psnr"] < 30 and card["encode_s_per_video_s"] > 0 and 0 <= card["motion_kept"] <= 1


def test_a_bundle_carries_its_autoencoder_and_can_be_moved(tmp_path):
    from framepack.model_bundle import BundleMeta, load_bundle, save_bundle
    from framepack.models import PackedTransformer
    from framepack.models.config import PRESETS as MODEL_PRESETS
    from framepack.text.vocab import VocabEncoder, VocabEncoderConfig, Vocabulary

    codec = _codec()
    tc = dataclasses.replace(MODEL_PRESETS["tiny"], in_channels=4, out_channels=4)
    widths = VocabEncoderConfig(width=tc.text_embed_dim, pooled_width=tc.pooled_projection_dim, heads=2)
    text = VocabEncoder(Vocabulary.build(["a b"]), widths, seed=0)
    meta = BundleMeta(fps=30, height=16, width=16, window=2, schedule="released-f1")
    save_bundle(tmp_path / "b", PackedTransformer(tc), text, codec, meta)
    assert json.loads((tmp_path / "b" / "codec.json").read_text())["path"] == "codec"
    shutil.move(tmp_path / "b", tmp_path / "moved")
    loaded = load_bundle(tmp_path / "moved").codec
    z = torch.randn(1, 4, 3, 2, 2)
    assert torch.equal(loaded.decode(z), codec.decode(z))


def test_latent_cache_windows_equal_the_encoded_frames_and_resume(tmp_path):
    from framepack.train import latent_cache
    from framepack.train.data import WorldSource

    codec = _codec()
    codec.path = "x"
    kw = {"videos": 3, "clip_latents": 3, "seconds": 2.0, "size": 16, "fps": 30.0, "seed": 1}
    world = WorldSource(2.0, 16, 30.0, 1, 3)
    old = latent_cache.SHARD
    latent_cache.SHARD = 2
    try:
        root = latent_cache.build_latent_cache(codec, tmp_path / "cache", world, **kw)
        (root / "shard-00001.json").unlink()  # an interrupted build: the second shard is redone
        latent_cache.build_latent_cache(codec, tmp_path / "cache", world, **kw)
    finally:
        latent_cache.SHARD = old
    cached = latent_cache.LatentSource(root)
    assert len(cached) == 3
    source = WorldSource(2.0, 16, 30.0, 1, 3)
    far = int(cached.tensors["far_offset"][2])
    pixels, _ = source.frames(2, list(range(4 * (far - 1), 4 * (far - 1) + 13)))
    expected = codec.encode(pixels[None])[0, :, 1:]
    assert torch.allclose(cached.tensors["far"][2].float(), expected, atol=0.02 * expected.abs().max())
    gen = torch.Generator().manual_seed(0)
    latents, indices, timeline = cached.window(2, gen, follow_start=True, needed=2)
    assert latents.shape == (4, 3, 2, 2) and indices.tolist() == [0, 1, 2] and timeline
    with pytest.raises(UserError, match="other settings"):
        latent_cache.build_latent_cache(codec, tmp_path / "cache", world, **(kw | {"videos": 5}))


def test_a_model_trains_on_cached_latents(tmp_path):
    from framepack.train import latent_cache
    from framepack.train.config import PRESETS, DataConfig
    from framepack.train.data import WorldSource
    from framepack.train.loop import train

    codec = _codec()
    codec.save(tmp_path / "ae")
    codec.path = str(tmp_path / "ae")
    world = WorldSource(4.0, 16, 30.0, 0, 4)
    latent_cache.build_latent_cache(
        codec, tmp_path / "cache", world, videos=4, clip_latents=6, seconds=4.0, size=16, fps=30.0
    )
    data = DataConfig(kind="latents", path=str(tmp_path / "cache"), size=16, clip_latents=6, seconds=4.0)
    config = dataclasses.replace(PRESETS["tiny-test"], codec=codec.config(), data=data, steps=2)
    run = train(config, tmp_path / "run", progress=False)
    from framepack.model_bundle import load_bundle

    bundle = load_bundle(run / "bundle")
    assert bundle.codec.latent_channels == 4 and (run / "bundle" / "codec" / "model.safetensors").is_file()
    wrong = dataclasses.replace(config, data=dataclasses.replace(data, clip_latents=9))
    with pytest.raises(UserError, match="cached windows hold 6 latents"):
        train(wrong, tmp_path / "run2", progress=False)


def test_world_speeds_are_not_whole_latents_per_latent():
    from framepack.data.world_script import SPEEDS, random_script

    per_latent = [4 * v / 30 for v in SPEEDS.values()]  # px per 4-frame latent at 30 fps
    assert all(p % 8 != 0 for p in per_latent) and sorted(v / 30 for v in SPEEDS.values()) == [1.5, 3.0, 5.0]
    speeds = {
        a.speed
        for s in range(40)
        for a in random_script(s, 6.0, speed_range=(0.0, 180.0)).actions
        if a.direction != "hold"
    }
    assert len(speeds) > 20 and all(0 <= v <= 180 for v in speeds)
    assert np.isfinite(list(speeds)).all()


@pytest.mark.parametrize("kind", ["autoencoder", "pixel"])
def test_the_writer_decodes_a_growing_run_incrementally_and_exactly(kind):
    from framepack.codecs.pixel import PixelCodec
    from framepack.writer import VideoWriter

    codec = _codec() if kind == "autoencoder" else PixelCodec(8, 4)
    c = codec.latent_channels
    latents = torch.randn(1, c, 10, 2, 2)
    done = torch.zeros(10, dtype=torch.bool)
    writer = VideoWriter(codec, "cpu", window=3)
    calls = []
    real = writer._decode
    writer._decode = lambda lat, a, b: calls.append((a, b)) or real(lat, a, b)
    for stop in (4, 7, 10):
        done[:stop] = True
        grown = writer.decode(latents, done)
    assert calls == [(0, 4), (3, 7), (6, 10)]  # only the new latents, with one of context
    whole = VideoWriter(codec, "cpu", window=3).decode(latents, done)
    assert grown.shape == whole.shape == (1, 3, 37, 16, 16)
    assert torch.allclose(grown, whole, atol=1e-5)


def test_difference_losses_see_blur_and_a_picture_that_holds_still_inside_a_latent():
    from framepack.codecs.autoencoder_train import difference_loss

    truth = _pan("steadily").permute(3, 0, 1, 2)[None].float() / 127.5 - 1  # (1, 3, F, H, W)
    assert difference_loss(truth, truth, 2) == 0 and difference_loss(truth, truth, 3) == 0
    stepped = truth.clone()
    for g in range(1, truth.shape[2], 4):
        stepped[:, :, g : g + 4] = truth[:, :, min(g + 3, truth.shape[2] - 1)][:, :, None]
    blurred = torch.nn.functional.avg_pool3d(truth, (1, 3, 3), stride=1, padding=(0, 1, 1))
    assert difference_loss(stepped, truth, 2) > 1.5 * difference_loss(blurred, truth, 2)
    assert difference_loss(blurred, truth, 3) > 0.01


def test_init_starts_a_finetune_from_another_runs_weights(tmp_path):
    from framepack.codecs.autoencoder_train import Run, _load_init
    from framepack.train.checkpoint import latest_checkpoint, load_checkpoint

    train_codec(tmp_path / "a", dataclasses.replace(TINY, steps=2))
    model = VideoAutoencoder(AutoencoderConfig(**TINY_MODEL))
    (tmp_path / "b").mkdir()
    _load_init(model, tmp_path / "a", Run(tmp_path / "b"))
    ema = load_checkpoint(latest_checkpoint(tmp_path / "a" / "checkpoints")).ema
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items() if k in ema)
    assert json.loads((tmp_path / "b" / "init.json").read_text())["checkpoint"] == "step-0000002.json"
    wide = VideoAutoencoder(AutoencoderConfig(**(TINY_MODEL | {"width": 32})))
    with pytest.raises(UserError, match="do not fit"):
        _load_init(wide, tmp_path / "a", Run(tmp_path / "b"))
    tuned = dataclasses.replace(TINY, steps=2, edge_weight=1.0, motion_weight=2.0)
    codec = train_codec(tmp_path / "c", tuned, init=tmp_path / "a")
    assert codec.card["training"]["steps"] == 2
    with pytest.raises(UserError, match="--init starts a new run"):
        train_codec(tmp_path / "c", init=tmp_path / "a", resume=True)


def test_the_codec_contact_sheet_puts_each_input_above_its_reconstruction():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import codec_sheet

    image = codec_sheet.sheet(_codec(), clips=2, frames=5, scale=2, seed=7)
    assert image.shape == (2 * 2 * 64 * 2, 5 * 64 * 2, 3) and image.dtype == np.uint8
    truth = codec_sheet.held_out_clips(2, 5, 64, 30.0, 7)
    first = (truth[0, :, 0].permute(1, 2, 0).numpy() + 1) * 127.5  # clip 0, frame 0, (H, W, 3)
    assert np.abs(image[0:128:2, 0:128:2].astype(float) - first).max() <= 1.0  # row 0: the input
    assert np.abs(image[128:256:2, 0:128:2].astype(float) - first).max() > 1.0  # row 1: a recon
