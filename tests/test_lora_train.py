"""LoRA training for the released models, on tiny random components in the released layouts.

- the latent cache: a folder of captioned videos and an image -> one safetensors per clip with
  VAE latents, LLaMA states, CLIP pooled and SigLIP features; re-running reuses it;
- training: the loss on fixed held-out sections falls; `--resume` continues the exact loss
  sequence and weights of an uninterrupted run; general mode and block streaming train too;
- the saved LoRA changes the transformer's output; unloading restores it bit for bit; the kohya
  / musubi and diffusers files merge into the same weights, and convert both ways;
- `framepack lora` refuses bad input in one line; torchrun with 2 processes (DDP, FSDP2)
  matches one process and resumes on another process count.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from hunyuan_fixtures import build_hunyuan_dir, build_redux_dir

from framepack.cli import main
from framepack.errors import UserError
from framepack.hunyuan.latent_cache import CacheSettings, HunyuanEncoders, LatentCache, build_cache
from framepack.lora import convert_lora, merge_lora, parse_lora
from framepack.lora_train.adapters import detach_lora, load_adapters
from framepack.lora_train.config import LoraTrainConfig
from framepack.lora_train.loop import Sources, load_base, train_lora
from framepack.lora_train.samples import draw_sample
from framepack.models import PRESETS, PackedTransformer
from framepack.train.loop import read_log
from framepack.train.loss import flow_matching_loss
from framepack.video import write_video

pytest.importorskip("peft")
pytest.importorskip("diffusers")

BUCKET = 32  # 32x32 pixels, 4x4 latents
WINDOW = 2
TINY = dict(
    window=WINDOW, rank=4, lr=3e-3, steps=6, dtype="fp32", checkpoint_every=3, threads=1, sigma_shift=1.0
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_hunyuan_dir(root / "HunyuanVideo")
    build_redux_dir(root / "flux_redux_bfl")
    config = PRESETS["tiny"].replace(pooled_projection_dim=32)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = PackedTransformer(config)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn_like(p) * 0.2)
    model.save_pretrained(root / "FramePackI2V_HY", max_shard_size="100KB")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Two captioned videos (a bar moving left or right) and a captioned image."""
    root = tmp_path_factory.mktemp("clips")
    t = np.arange(24)[:, None, None]
    x = np.arange(32)[None, None, :]
    for name, direction in (("left", -1), ("right", 1)):
        bar = (np.abs((x - 16 - direction * t) % 32 - 4) < 3) * 200 + 20  # (24, 1, 32)
        frames = np.repeat(np.broadcast_to(bar, (24, 32, 32))[..., None], 3, axis=-1).astype(np.uint8)
        write_video(root / f"{name}.mp4", frames, 30)
        (root / f"{name}.txt").write_text(f"a bar moves {name}")
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(root / "grey.png")
    (root / "grey.txt").write_text("a grey wall")
    return root


@pytest.fixture(scope="module")
def cache_dir(model_dir, data_dir, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny tokenizer's template length differs from 95
        encoders = HunyuanEncoders.from_dir(model_dir, device="cpu", dtype="fp32")
    settings = CacheSettings(bucket=BUCKET, clip_latents=4, image_latents=WINDOW)
    build_cache(data_dir, cache, encoders, settings, progress=False)
    return cache


def sources(model_dir: Path, cache_dir: Path) -> Sources:
    return Sources(str(cache_dir), str(model_dir / "FramePackI2V_HY"))


def config(**changes) -> LoraTrainConfig:
    return LoraTrainConfig(**{**TINY, **changes})


@pytest.fixture(scope="module")
def trained(model_dir, cache_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "full"
    return train_lora(config(), run, sources(model_dir, cache_dir), progress=False)


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_log(run / "log.jsonl")]


# ----------------------------------------------------------------------------- the cache


def test_cache_holds_every_clip_in_the_released_formats(cache_dir, model_dir, data_dir):
    cache = LatentCache(cache_dir)
    assert sorted(Path(e.source).name for e in cache.entries) == ["grey.png", "left.mp4", "right.mp4"]
    by_name = {Path(e.source).name: i for i, e in enumerate(cache.entries)}
    video, image = cache[by_name["left.mp4"]], cache[by_name["grey.png"]]
    assert video.latents.shape == (4, 1 + 4, 4, 4)  # 17 frames at 30 fps -> 5 latents, 32x32 -> 4x4
    assert image.latents.shape == (4, 1 + WINDOW, 4, 4)
    assert video.text_states.ndim == 2 and video.text_states.shape[1] == 32  # LLaMA width, valid tokens
    assert video.pooled.shape == (32,) and video.image_embeds.shape == (16, 24)  # CLIP pooled, SigLIP
    assert video.caption == "a bar moves left"
    assert not torch.equal(video.latents, cache[by_name["right.mp4"]].latents)
    # re-running encodes nothing new (same files, same bytes)
    files = {p: p.stat().st_mtime_ns for p in (cache_dir / "clips").iterdir()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoders = HunyuanEncoders.from_dir(model_dir, device="cpu", dtype="fp32")
    build_cache(
        data_dir,
        cache_dir,
        encoders,
        CacheSettings(bucket=BUCKET, clip_latents=4, image_latents=WINDOW),
        False,
    )
    assert {p: p.stat().st_mtime_ns for p in (cache_dir / "clips").iterdir()} == files


def test_cache_refuses_uncaptioned_files_in_one_line(tmp_path, model_dir, capsys):
    (tmp_path / "data").mkdir()
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "data" / "a.png")
    code = main(["lora", "cache", "--data", str(tmp_path / "data"), "--cache", str(tmp_path / "c"),
                 "--model-dir", str(model_dir), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no caption file" in err and "a.txt" in err and "\n" not in err


# ----------------------------------------------------------------------------- training


def held_out_loss(model, cfg: LoraTrainConfig, cache: LatentCache, count: int = 8) -> float:
    """Mean loss of `count` fixed sections (keyed by a step far past the run)."""
    total = 0.0
    with torch.no_grad():
        for i in range(count):
            s = draw_sample(cfg, cache, 10**6, i)
            mask = torch.ones(s.text_states.shape[:2], dtype=torch.bool)
            guidance = torch.full((1,), cfg.guidance * 1000.0)

            def velocity(x, sigma, s=s, mask=mask, guidance=guidance):
                return model(x, sigma * 1000, s.text_states, mask, s.pooled, s.target_indices,
                             context=s.context, image_embeds=s.image_embeds, guidance=guidance)  # fmt: skip

            total += float(flow_matching_loss(velocity, s.target, s.noise, s.sigma).mean())
    return total / count


def test_training_lowers_the_loss_on_held_out_sections(model_dir, cache_dir, tmp_path):
    cfg = config(steps=30, checkpoint_every=30)
    run = train_lora(cfg, tmp_path / "run", sources(model_dir, cache_dir), progress=False)
    cache = LatentCache(cache_dir)
    base = load_base(str(model_dir / "FramePackI2V_HY"), torch.float32)
    before = held_out_loss(base, cfg, cache)
    handle = load_adapters(base, run / "lora.safetensors")
    after = held_out_loss(base, cfg, cache)
    detach_lora(handle)
    assert after < 0.9 * before, (before, after)
    assert len(losses(run)) == 30


def test_resume_continues_the_exact_run(trained, model_dir, cache_dir, tmp_path):
    run = tmp_path / "resumed"
    train_lora(config(steps=3), run, sources(model_dir, cache_dir), progress=False)
    (run / "lora.safetensors").unlink()
    train_lora(config(), run, sources(model_dir, cache_dir), resume=True, progress=False)
    assert losses(run) == losses(trained)
    assert [r["step"] for r in read_log(run / "log.jsonl")] == list(range(1, 7))
    from safetensors.torch import load_file

    a, b = load_file(run / "lora.safetensors"), load_file(trained / "lora.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_changed_settings(trained, model_dir, cache_dir, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained, run)
    with pytest.raises(UserError, match="rank differ"):
        train_lora(config(rank=8, steps=8), run, sources(model_dir, cache_dir), resume=True, progress=False)


def test_general_mode_and_block_streaming_train(model_dir, cache_dir, tmp_path, trained):
    general = train_lora(
        config(mode="general", layouts=("inverted", "forward", "endpoints"), steps=2),
        tmp_path / "general", sources(model_dir, cache_dir), progress=False,
    )  # fmt: skip
    assert len(losses(general)) == 2
    streamed = train_lora(
        config(low_vram=True), tmp_path / "streamed", sources(model_dir, cache_dir), progress=False
    )
    assert losses(streamed) == pytest.approx(losses(trained), rel=1e-6)


# ----------------------------------------------------------------------------- using the LoRA


def transformer_output(model) -> torch.Tensor:
    from framepack.packing import PackedContext, PackedLevel

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, WINDOW, 4, 4, generator=g)
    ctx = PackedContext(
        (PackedLevel((1, 2, 2), torch.randn(1, 4, 2, 4, 4, generator=g), torch.tensor([[0, 3]])),)
    )
    with torch.no_grad():
        return model(x, torch.tensor([500.0]), torch.randn(1, 5, 32, generator=g), torch.ones(1, 5, dtype=torch.bool),
                     torch.randn(1, 32, generator=g), torch.tensor([[1, 2]]), context=ctx,
                     image_embeds=torch.randn(1, 16, 24, generator=g), guidance=torch.tensor([10000.0]))  # fmt: skip


def test_lora_changes_the_output_and_unloading_restores_it_bit_for_bit(trained, model_dir):
    model = load_base(str(model_dir / "FramePackI2V_HY"), torch.float32)
    base = transformer_output(model)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    handle = load_adapters(model, trained / "lora.safetensors")
    adapted = transformer_output(model)
    assert (adapted - base).abs().max() > 1e-4
    model = detach_lora(handle)
    assert torch.equal(transformer_output(model), base)
    assert model.state_dict().keys() == weights.keys()
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    # merging (what `generate --lora` does) gives the adapters' output
    merge_lora(model, trained / "lora.safetensors")
    torch.testing.assert_close(transformer_output(model), adapted, rtol=1e-4, atol=1e-5)


def test_kohya_and_diffusers_files_merge_to_the_same_weights(trained, model_dir):
    from safetensors import safe_open
    from safetensors.torch import load_file

    kohya, diffusers = (
        load_file(trained / "lora.safetensors"),
        load_file(trained / "lora.diffusers.safetensors"),
    )
    assert "lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight" in kohya  # musubi-tuner's naming
    assert "lora_unet_single_transformer_blocks_0_proj_mlp.lora_up.weight" in kohya
    assert "lora_unet_transformer_blocks_0_attn_to_q.alpha" in kohya
    assert "transformer.transformer_blocks.0.attn.to_q.lora_A.weight" in diffusers
    assert not any("norm" in k for k in kohya)  # adaLN modulations are not targets (as musubi)
    with safe_open(trained / "lora.safetensors", "pt") as f:
        assert f.metadata()["ss_network_module"] == "networks.lora_framepack"
    merged = []
    for state in (kohya, diffusers):
        model = load_base(str(model_dir / "FramePackI2V_HY"), torch.float32)
        merge_lora(model, state)
        merged.append(model.state_dict())
    for k, v in merged[0].items():
        torch.testing.assert_close(v, merged[1][k], rtol=0, atol=1e-7)


def test_conversion_both_ways_keeps_the_products():
    names = ["transformer_blocks.0.attn.add_q_proj", "single_transformer_blocks.3.proj_out"]
    g = torch.Generator().manual_seed(0)
    kohya = {}
    for n in names:
        stem = "lora_unet_" + n.replace(".", "_")
        kohya |= {f"{stem}.lora_down.weight": torch.randn(4, 8, generator=g),
                  f"{stem}.lora_up.weight": torch.randn(6, 4, generator=g), f"{stem}.alpha": torch.tensor(2.0)}  # fmt: skip
    diffusers = convert_lora(kohya, "diffusers", names)
    assert set(diffusers) == {f"transformer.{n}.lora_{x}.weight" for n in names for x in "AB"}
    back = convert_lora(diffusers, "kohya", names)
    assert set(back) == set(kohya)
    for source in (diffusers, back):
        pairs, unknown = parse_lora(source, names)
        assert not unknown
        for n in names:
            stem = "lora_unet_" + n.replace(".", "_")
            expected = 0.5 * kohya[f"{stem}.lora_up.weight"] @ kohya[f"{stem}.lora_down.weight"]
            p = pairs[n]
            scale = (p.alpha if p.alpha is not None else p.rank) / p.rank
            torch.testing.assert_close(scale * p.up @ p.down, expected)


# ----------------------------------------------------------------------------- the command


def test_cli_trains_converts_and_refuses_in_one_line(model_dir, cache_dir, tmp_path, capsys, trained):
    run = tmp_path / "cli"
    common = ["lora", "train", "--cache", str(cache_dir), "--out", str(run), "--model-dir", str(model_dir),
              "--no-progress", "--threads", "1", "--dtype", "fp32", "--window", str(WINDOW), "--rank", "4",
              "--lr", "3e-3", "--sigma-shift", "1", "--checkpoint-every", "3"]  # fmt: skip
    assert main([*common, "--steps", "6"]) == 0
    assert losses(run) == losses(trained)
    out = tmp_path / "converted.safetensors"
    assert main(["lora", "convert", str(run / "lora.diffusers.safetensors"), str(out), "--to", "kohya"]) == 0
    capsys.readouterr()
    missing_cache = ["lora", "train", "--cache", str(tmp_path / "nope"), "--out", str(tmp_path / "y"),
                     "--transformer-dir", str(model_dir / "FramePackI2V_HY")]  # fmt: skip
    for argv, message in [
        ([*common, "--steps", "6"], "not empty"),
        ([*common, "--rank", "0", "--out", str(tmp_path / "x")], "rank must be >= 1"),
        (missing_cache, "not a latent cache"),
        (
            ["lora", "convert", str(tmp_path / "missing.safetensors"), str(out), "--to", "kohya"],
            "does not exist",
        ),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err


# ----------------------------------------------------------------------------- past one GPU


def _torchrun(*args: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "framepack", "lora", "train", *args, "--no-progress"]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "dtype", "rel"), [("ddp", "fp32", 1e-5), ("fsdp", "fp32", 1e-5), ("fsdp", "bf16", 1e-2)]
)
def test_two_processes_match_one_and_resume_on_one(strategy, dtype, rel, model_dir, cache_dir, tmp_path):
    """Global batch 2 over 2 processes equals 1 process; a 2-process run resumes in 1 process.
    FSDP2 with bf16 base weights shards the float32 adapters as groups of their own."""
    cfg = config(batch_size=2, steps=4, checkpoint_every=2, strategy=strategy, dtype=dtype)
    single = train_lora(cfg, tmp_path / "single", sources(model_dir, cache_dir), progress=False)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.replace(steps=2).to_dict()))
    run = tmp_path / "two"
    _torchrun("--config", str(tmp_path / "cfg.json"), "--cache", str(cache_dir), "--out", str(run),
              "--transformer-dir", str(model_dir / "FramePackI2V_HY"))  # fmt: skip
    assert losses(run) == pytest.approx(losses(single)[:2], rel=rel)
    train_lora(cfg, run, sources(model_dir, cache_dir), resume=True, progress=False)
    assert losses(run) == pytest.approx(losses(single), rel=rel)


def test_the_memory_table_in_the_docs_is_the_computed_one():
    """docs/lora.md shows what `framepack lora memory` computes (rows of GiB per mode)."""
    from framepack.lora_train.memory import memory_table

    rows = memory_table().splitlines()[:5]  # header, rule, 384 / 512 / 640
    docs = (Path(__file__).parents[1] / "docs" / "lora.md").read_text().splitlines()
    assert all(row in docs for row in rows)
    assert float(rows[4].split("|")[4]) < float(rows[4].split("|")[3])  # streaming saves memory
