"""Sequence parallelism (framepack/models/parallel.py): two gloo processes on the CPU give the
single-process output, with the tokens really split; `framepack generate --parallel` refuses
bad launches in one line before loading anything."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from framepack.models import PRESETS, PackedTransformer
from framepack.packing import PackedContext, PackedLevel

pytest.importorskip("yunchang")

TINY = PRESETS["tiny"].replace(num_layers=2, num_single_layers=2)
WORLD = 2


def _model(config, seed: int = 0, noise: float = 0.2) -> PackedTransformer:
    torch.manual_seed(seed)  # test-only: deterministic init, the same in every process
    model = PackedTransformer(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * noise)
    return model


def _inputs(config, batch: int, frames: int, levels: bool, image_tokens: int, text_valid: list[int]):
    g = torch.Generator().manual_seed(batch * 10 + frames)
    context = None
    if levels:  # a released-like context: 16 + 4 + 1 tokens at 8x8 latents
        spec = (((1, 2, 2), [0]), ((2, 4, 4), [1, 2]), ((4, 8, 8), [3, 4, 5]))
        context = PackedContext(
            tuple(
                PackedLevel(
                    k,
                    torch.randn(batch, 4, len(f), 8, 8, generator=g),
                    torch.tensor(f)[None].expand(batch, -1),
                )
                for k, f in spec
            )
        )
    mask = torch.zeros(batch, 5, dtype=torch.bool)
    for row, valid in enumerate(text_valid):
        mask[row, :valid] = True
    return dict(
        latents=torch.randn(batch, 4, frames, 8, 8, generator=g),
        timestep=torch.full((batch,), 700.0),
        text_states=torch.randn(batch, 5, config.text_embed_dim, generator=g),
        text_mask=mask,
        pooled_text=torch.randn(batch, config.pooled_projection_dim, generator=g),
        latent_indices=torch.arange(6, 6 + frames)[None].expand(batch, -1),
        context=context,
        image_embeds=torch.randn(batch, image_tokens, config.image_proj_dim, generator=g),
        guidance=torch.full((batch,), 10000.0),
    )


# name: (config, inputs, video tokens, image + text tokens)
CASES = {
    # 48 noisy + 21 context tokens, 2 image + 5 text: both runs padded (the key channel)
    "padded": (TINY, dict(batch=1, frames=3, levels=True, image_tokens=2, text_valid=[5]), 69, 7),
    # 32 + 6 tokens: even runs, no padding, no key channel
    "even": (TINY, dict(batch=1, frames=2, levels=False, image_tokens=1, text_valid=[5]), 32, 6),
    # batch 2 with text padding (a key mask), and the per-token output MLP
    "masked": (
        TINY.replace(head_hidden=8),
        dict(batch=2, frames=3, levels=True, image_tokens=2, text_valid=[5, 3]),
        69,
        7,
    ),
}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from framepack.models import parallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    channel_calls = []
    wrapped = parallel._with_key_channel
    parallel._with_key_channel = lambda *a: channel_calls.append(1) or wrapped(*a)
    try:
        results = {}
        for name, (config, spec, _, _) in CASES.items():
            model = _model(config)
            inputs = _inputs(config, **spec)
            seen: list[int] = []
            model.transformer_blocks[0].register_forward_pre_hook(
                lambda m, args, seen=seen: seen.append(args[0].shape[1])
            )
            with torch.no_grad():
                reference = model(**inputs)
                del seen[:]
                channel_calls.clear()
                out = parallel.SequenceParallel(model)(**inputs)
            results[name] = dict(out=out, reference=reference, tokens=seen[0], channel=len(channel_calls))
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[dict]:
    import torch.multiprocessing as mp

    folder = tmp_path_factory.mktemp("parallel")
    mp.spawn(_worker, args=(str(folder / "init"), str(folder)), nprocs=WORLD, join=True)
    return [torch.load(folder / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_give_the_one_process_output(results, name):
    _, _, video, _ = CASES[name]
    for rank in results:
        r = rank[name]
        assert r["out"].shape == r["reference"].shape
        torch.testing.assert_close(r["out"], r["reference"], rtol=1e-5, atol=1e-5)
        assert r["tokens"] == -(-video // WORLD)  # each process held half the video tokens
    assert torch.equal(results[0][name]["out"], results[1][name]["out"])


def test_the_key_channel_only_where_tokens_are_padded_or_masked(results):
    # 2 dual blocks (one attention each) + 2 single blocks: 4 attentions per forward
    assert [results[0][n]["channel"] for n in CASES] == [4, 0, 4]


def test_removed_keys_get_no_weight():
    """The key channel alone (no processes): removed keys change nothing, kept keys all count."""
    from framepack.models.attention import sdpa_attention
    from framepack.models.parallel import _with_key_channel

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 9, 2, 16, generator=g) * 3 for _ in range(3))
    keep = torch.ones(2, 9, dtype=torch.bool)
    keep[0, 6:] = False
    keep[1, ::2] = False
    expected = sdpa_attention(q, k, v, keep[:, None, None, :])
    qc, kc, vc = _with_key_channel(q, k, v, keep)
    scaled = torch.nn.functional.scaled_dot_product_attention(
        qc.transpose(1, 2), kc.transpose(1, 2), vc.transpose(1, 2), scale=16**-0.5
    ).transpose(1, 2)
    torch.testing.assert_close(scaled[..., :16], expected, rtol=1e-5, atol=1e-6)
    assert (scaled[..., 16:] == 0).all()


# ---------------------------------------------------------------------- GPUs (NCCL, bf16 kernels)


def _on(inputs: dict, device: torch.device, dtype: torch.dtype | None = None) -> dict:
    """The inputs on `device`; with `dtype`, the model-side tensors in it (times stay float32)."""
    out = {}
    for key, value in inputs.items():
        if isinstance(value, PackedContext):
            out[key] = value.to(device, dtype)
        elif isinstance(value, torch.Tensor):
            cast = (
                dtype
                if dtype is not None and key in ("latents", "text_states", "pooled_text", "image_embeds")
                else None
            )
            out[key] = value.to(device=device, dtype=cast)
        else:
            out[key] = value
    return out


def _gpu_worker(rank: int, init_file: str, out_dir: str, world: int) -> None:
    """Per case: the bf16 model alone and split over `world` GPUs, both against float32."""
    import torch.distributed as dist

    from framepack.models.parallel import SequenceParallel

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        device, results = torch.device("cuda", rank), {}
        for name, (config, spec, _, _) in CASES.items():
            model = _model(config, noise=0.05).to(device)  # milder weights: bf16 stays near float32
            inputs = _inputs(config, **spec)
            with torch.no_grad():
                exact = model(**_on(inputs, device))
                model = model.to(torch.bfloat16)
                half = _on(inputs, device, torch.bfloat16)
                plain = model(**half).float()
                split = SequenceParallel(model)(**half).float()
            results[name] = {
                "plain": (plain - exact).abs().max().item(),
                "parallel": (split - exact).abs().max().item(),
                "between": (split - plain).abs().max().item(),
            }
        torch.save(results, Path(out_dir) / f"gpu{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("world", [1, 2])
def test_on_gpus_the_split_bf16_model_is_as_close_as_the_whole_one(tmp_path, world):
    """NCCL and yunchang's CUDA kernels (flash-attn or torch's flash kernel, with the extra key
    channel where runs are padded or masked): the split bf16 model stays within a quarter of
    bf16's own error (against float32) of the whole bf16 model. (On the CPU, with gloo and the
    math kernel, the same comparison gives 0.006-0.009 against 0.24-0.26.)"""
    import torch.multiprocessing as mp

    if torch.cuda.device_count() < world:
        pytest.skip(f"needs {world} GPUs")
    mp.spawn(_gpu_worker, args=(str(tmp_path / "init"), str(tmp_path), world), nprocs=world, join=True)
    for rank in range(world):
        for name, r in torch.load(tmp_path / f"gpu{rank}.pt").items():
            print(rank, name, r)
            assert r["between"] <= 0.25 * r["plain"], (name, r)


# ---------------------------------------------------------------------- the command line


def _generate(capsys, *args: str) -> tuple[int, str]:
    from framepack.cli import main

    code = main(["generate", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({}, ["--model", "hunyuan-inverted", "--parallel", "2"], "--parallel 2 runs under torchrun"),
        (
            {"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0"},
            ["--model", "hunyuan-f1", "--parallel", "2"],
            "torchrun started 4 processes",
        ),
        (
            {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"},
            ["--parallel", "2"],
            "--parallel applies to the released models (hunyuan-inverted, hunyuan-f1), not to demo",
        ),
        (
            {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"},
            ["--model", "hunyuan-f1", "--parallel", "2", "--teacache", "0.15"],
            "--teacache",
        ),
        (
            {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"},
            ["--model", "hunyuan-f1", "--parallel", "2", "--device", "cuda:1"],
            "cuda:LOCAL_RANK",
        ),
        ({}, ["--model", "hunyuan-f1", "--parallel", "0"], "--parallel must be >= 1"),
    ],
)
def test_bad_launches_are_one_line(monkeypatch, capsys, tmp_path, env, args, message):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    code, err = _generate(capsys, *args, "--model-dir", str(tmp_path))
    assert code == 2
    assert message in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())  # refused before anything was loaded or written


def test_heads_must_divide(monkeypatch, capsys, tmp_path):
    """The head count is read from the transformer's config.json before the model loads."""
    folder = tmp_path / "FramePack_F1_I2V_HY_20250503"
    folder.mkdir()
    (folder / "config.json").write_text('{"num_attention_heads": 2}')
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    for name, value in {"WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    code, err = _generate(capsys, "--model", "hunyuan-f1", "--model-dir", str(tmp_path), "--parallel", "3")
    assert code == 2
    assert "--parallel 3 must divide the model's 2 attention heads" in err and err.count("\n") == 1, err


def test_other_processes_resume_from_a_copy_of_process_0s_files(tmp_path):
    from framepack.cli.generate_parallel import follower_options
    from framepack.options import GenerationOptions
    from framepack.resume import parts_path, resume_path
    from framepack.video import sidecar_path

    out = tmp_path / "job.mp4"
    for path in (out, sidecar_path(out), resume_path(out)):
        path.write_bytes(path.name.encode())
    parts_path(out).mkdir()
    (parts_path(out) / "section_00000.safetensors").write_bytes(b"part")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    options = follower_options(GenerationOptions(out=str(out), resume=True, preview="p"), scratch)
    copy = scratch / "job.mp4"
    assert (options.out, options.resume, options.overwrite, options.preview) == (str(copy), True, False, None)
    for source, target in (
        (out, copy),
        (sidecar_path(out), sidecar_path(copy)),
        (resume_path(out), resume_path(copy)),
    ):
        assert target.read_bytes() == source.read_bytes()
    assert (parts_path(copy) / "section_00000.safetensors").read_bytes() == b"part"
    fresh = follower_options(GenerationOptions(out=str(out)), tmp_path / "other")
    assert (fresh.out, fresh.overwrite) == (str(tmp_path / "other" / "job.mp4"), True)


@pytest.mark.slow
def test_generate_parallel_under_torchrun_gives_the_one_process_video(tmp_path):
    """`torchrun --nproc_per_node 2 -m framepack generate --parallel 2` on tiny released-format
    components (gloo, CPU): process 0 writes the one-process video; nothing else is written."""
    pytest.importorskip("diffusers")
    import socket
    import subprocess

    sys.path.insert(0, str(Path(__file__).parent))
    from hunyuan_fixtures import build_hunyuan_dir, build_redux_dir
    from test_hunyuan_pipeline import BUCKET, PROMPT, TRANSFORMER_DIRS, build_transformer, write_image

    from framepack.video import read_video

    models = tmp_path / "models"
    build_hunyuan_dir(models / "HunyuanVideo")
    build_redux_dir(models / "flux_redux_bfl")
    build_transformer(models / TRANSFORMER_DIRS["hunyuan-inverted"], seed=10)
    image = write_image(tmp_path / "start.png", seed=4)
    work = tmp_path / "work"
    work.mkdir()
    # --crf 0: lossless, so x264 keeps near-equal frames near (lossy, they can differ by ~10 levels)
    args = ["generate", "--model", "hunyuan-inverted", "--model-dir", str(models), "--image", image,
            "--prompt", PROMPT, "--seconds", "1", "--steps", "2", "--device", "cpu", "--quiet",
            "--bucket", str(BUCKET), "--crf", "0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    single = subprocess.run([sys.executable, "-m", "framepack", *args, "--out", "one.mp4"], cwd=work,
                            env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert single.returncode == 0, single.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    parallel = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(port), "-m", "framepack", *args, "--out", "two.mp4", "--parallel", "2"],
        cwd=work, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    assert parallel.stdout.count("two.mp4 (30 frames") == 1  # process 0 alone reports
    one, two = read_video(work / "one.mp4")[0], read_video(work / "two.mp4")[0]
    assert one.shape == two.shape == (30, BUCKET, BUCKET, 3)
    error = np.abs(one.astype(int) - two.astype(int))
    print(f"frames differ by {error.mean():.4f} on average, {error.max()} at most")
    assert error.max() <= 2 and error.mean() < 0.05
    assert sorted(p.name for p in work.iterdir()) == sorted(["one.mp4", "one.json", "two.mp4", "two.json"])
    assert not list(tmp_path.glob("framepack-rank*"))  # the other process's scratch folder is gone
