"""The released-checkpoint path end to end, on tiny random components in the released layouts.

- `load_hunyuan` loads the three released folders (transformer shards + index, HunyuanVideo,
  flux_redux_bfl) offline into `Components` with the official defaults.
- Reference: one section sampled by our pipeline (Euler, the same sigmas, the same noise) equals
  diffusers' `HunyuanVideoFramepackPipeline` (FlowMatchEulerDiscreteScheduler, dynamic shift) for
  the inverted and the forward (F1) model, and for the inverted model with an end image.
- The index layouts equal SPEC sec. 5 index for index: tests/test_plans.py (released mode).
- Decoding: the video equals the official per-section decode + cross-fade (`soft_append`).
- `framepack generate --model hunyuan-inverted|hunyuan-f1 --model-dir DIR`: an MP4 with the
  exact frame count; missing parts exit 2 naming the repository.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from hunyuan_fixtures import build_hunyuan_dir, build_redux_dir

from framepack.components import LoadOptions, load_components
from framepack.hunyuan.components import dtypes, released_spec
from framepack.lora import parse_lora_arg
from framepack.models import PRESETS, PackedTransformer
from framepack.options import GenerationOptions
from framepack.pipeline import FramePackPipeline, Job
from framepack.resume import section_generator
from framepack.video import to_uint8_frames

diffusers = pytest.importorskip("diffusers")

BUCKET = 32  # 32x32 pixels, 4x4 latents: the tiny VAE and transformer run in milliseconds
TRANSFORMER_DIRS = {"hunyuan-inverted": "FramePackI2V_HY", "hunyuan-f1": "FramePack_F1_I2V_HY_20250503"}
PROMPT = "a cat walks on the grass"


def build_transformer(root: Path, seed: int) -> Path:
    """A tiny packed transformer with random weights (norms included), saved in 2+ shards."""
    config = PRESETS["tiny"].replace(pooled_projection_dim=32)  # tiny CLIP-L: hidden 32
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = PackedTransformer(config)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn_like(p) * 0.2)
    model.save_pretrained(root, max_shard_size="100KB")
    return root


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: on a shared machine, intra-op threads cost far more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_hunyuan_dir(root / "HunyuanVideo")
    build_redux_dir(root / "flux_redux_bfl")
    for i, name in enumerate(TRANSFORMER_DIRS.values()):
        build_transformer(root / name, seed=10 + i)
    return root


def load(model: str, model_dir: Path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny tokenizer's template length differs from 95
        return load_components(
            model, LoadOptions(model_dir=str(model_dir), device="cpu", dtype="fp32", bucket=BUCKET, **kw)
        )


@pytest.fixture(scope="module")
def inverted(model_dir):
    return load("hunyuan-inverted", model_dir)


@pytest.fixture(scope="module")
def f1(model_dir):
    return load("hunyuan-f1", model_dir)


def write_image(path: Path, seed: int, size=(BUCKET, BUCKET)) -> str:
    """A smooth random image (exactly bucket-sized, so no resizing on either side)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(small).resize(size[::-1], Image.BILINEAR).save(path)
    return str(path)


# ----------------------------------------------------------------------------- loading


def test_released_specs(inverted, f1):
    for comp, plan in ((inverted, "inverted"), (f1, "forward")):
        spec = comp.spec
        assert (spec.mode, spec.plan, spec.window, spec.fps, spec.steps) == ("released", plan, 9, 30, 25)
        assert spec.shift is None and spec.guidance == 10.0 and spec.size is None
        assert comp.dtype == torch.float32 and comp.codec.latent_channels == 4
    assert released_spec("hunyuan-f1").bucket == 640
    assert dtypes("auto", torch.device("cuda")) == (torch.bfloat16, torch.float16)
    assert dtypes("auto", torch.device("cpu")) == (torch.float32, torch.float32)
    assert dtypes("fp32", torch.device("cuda")) == (torch.float32, torch.float32)
    # the two checkpoints are different weights
    a, b = inverted.transformer.proj_out.weight, f1.transformer.proj_out.weight
    assert not torch.equal(a, b)


def test_image_encoder_callable(inverted):
    images = torch.rand(2, 3, BUCKET, BUCKET) * 2 - 1
    out = inverted.image_encoder(images)
    assert out.shape == (2, 16, 24)  # tiny SigLIP: 16 patches x 24 (released: 729 x 1152)
    assert torch.equal(out, inverted.image_encoder.encoder.encode(images))


def test_lora_argument_and_merge(model_dir, tmp_path, inverted):
    from safetensors.torch import save_file

    assert parse_lora_arg("a/b.safetensors") == ("a/b.safetensors", 1.0)
    assert parse_lora_arg("a/b.safetensors:0.5") == ("a/b.safetensors", 0.5)
    assert parse_lora_arg("C:/x.safetensors") == ("C:/x.safetensors", 1.0)
    down, up = torch.randn(2, 32), torch.randn(16, 2)  # proj_out: (16, 32)
    path = tmp_path / "lora.safetensors"
    save_file({"transformer.proj_out.lora_A.weight": down, "transformer.proj_out.lora_B.weight": up}, path)
    merged = load("hunyuan-inverted", model_dir, loras=[f"{path}:0.5"])
    delta = merged.transformer.proj_out.weight - inverted.transformer.proj_out.weight
    torch.testing.assert_close(delta, 0.5 * up @ down, rtol=1e-5, atol=1e-5)


def test_teacache_hooks(model_dir):
    comp = load("hunyuan-inverted", model_dir, teacache=0.1)
    comp.on_job_start((8, 8), 7)
    hooks = comp.on_section_start.__self__
    assert hooks.teacache.num_steps == 7 and hooks.teacache.threshold == 0.1
    hooks.teacache.step, hooks.teacache.skipped = 3, 2
    comp.on_section_start()
    assert hooks.teacache.step == 0 and hooks.teacache.skipped == 0
    plain = load("hunyuan-inverted", model_dir)
    plain.on_job_start((8, 8), 7)
    assert plain.on_section_start.__self__.teacache is None


# ----------------------------------------------------------------------------- reference


def diffusers_pipe(comp):
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoFramepackPipeline,
        HunyuanVideoFramepackTransformer3DModel,
    )

    transformer = HunyuanVideoFramepackTransformer3DModel.from_pretrained(comp.source).eval()
    text, image = comp.prompt_encoder, comp.image_encoder.encoder
    return HunyuanVideoFramepackPipeline(
        text_encoder=text.text_encoder,
        tokenizer=text.tokenizer,
        transformer=transformer,
        vae=comp.codec.vae,
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
        text_encoder_2=text.text_encoder_2,
        tokenizer_2=text.tokenizer_2,
        image_encoder=image.image_encoder,
        feature_extractor=image.feature_extractor,
    )


def run_both(comp, tmp_path, sampling_type, end_image: str | None = None):
    """Our one-section job and diffusers' pipeline on the same inputs -> (ours, theirs) latents."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import FramepackSamplingType

    image = write_image(tmp_path / "start.png", seed=1)
    options = GenerationOptions(
        image=image, end_image=end_image, prompt=PROMPT, seconds=1.0, steps=3, sampler="euler",
        out=str(tmp_path / "ours.mp4"),
    )  # fmt: skip
    job = Job(comp, options)
    assert len(job.plan) == 1
    section = job.plan.sections[0]
    ours = FramePackPipeline(comp).generate(options, progress=False).latents

    pipe = diffusers_pipe(comp)
    cond = job.cond
    # Our image latents (posterior means; the VAE is checked against diffusers elsewhere), so
    # that the generator only draws the section's noise, as ours does.
    queue = [cond.start, cond.end]
    pipe.prepare_image_latents = lambda image, dtype=None, device=None, generator=None, latents=None: (
        queue.pop(0).to(device=device, dtype=dtype)
    )
    # Our image features: diffusers truncates the image to uint8 where the official demo (and we)
    # keep its levels (test_hunyuan_encoders), and with an end image it computes the start/end
    # feature average and drops it.
    pipe.encode_image = lambda image, device=None, dtype=None: cond.image_embeds.to(dtype=dtype)
    h, w = cond.size
    prompt = cond.prompts[0]
    out = pipe(
        image=Image.open(image),
        last_image=Image.open(end_image) if end_image else None,
        prompt_embeds=prompt.states,
        pooled_prompt_embeds=prompt.pooled,
        prompt_attention_mask=prompt.mask,
        height=h,
        width=w,
        num_frames=33,
        latent_window_size=9,
        num_inference_steps=3,
        guidance_scale=10.0,
        generator=section_generator(options.seed, section.start),
        output_type="latent",
        sampling_type=FramepackSamplingType(sampling_type),
    )
    return ours, out.frames[0]


@pytest.mark.parametrize(
    ("model", "sampling_type"), [("inverted", "inverted_anti_drifting"), ("f1", "vanilla")]
)
def test_one_section_matches_diffusers(model, sampling_type, request, tmp_path):
    comp = request.getfixturevalue(model)
    ours, theirs = run_both(comp, tmp_path, sampling_type)
    assert ours.shape == theirs.shape == (1, 4, 10, 4, 4)  # [start | 9 generated]
    assert ours[:, :, 1:].abs().mean() > 0.1  # something was generated
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_end_image_matches_diffusers(inverted, tmp_path):
    """End frame: the end latent is the first inverted section's `post` clean frame (diffusers'
    `last_image`); the image features are the start/end average (diffusers computes and drops it,
    so it is handed ours)."""
    end = write_image(tmp_path / "end.png", seed=2)
    ours, theirs = run_both(inverted, tmp_path, "inverted_anti_drifting", end_image=end)
    assert ours.shape == (1, 4, 11, 4, 4)  # [start | 9 generated | end]
    torch.testing.assert_close(ours[:, :, :-1], theirs, rtol=1e-4, atol=1e-4)
    options = GenerationOptions(
        image=str(tmp_path / "start.png"), prompt=PROMPT, seconds=1.0, steps=3, sampler="euler",
        out=str(tmp_path / "plain.mp4"),
    )  # fmt: skip
    without = FramePackPipeline(inverted).generate(options, progress=False).latents
    assert (ours[:, :, 1:-1] - without[:, :, 1:]).abs().max() > 1e-3  # the end image matters


def test_end_image_slot_and_mixed_features(inverted, tmp_path):
    from framepack.conditioning import mix_image_embeds

    start = write_image(tmp_path / "s.png", seed=1)
    end = write_image(tmp_path / "e.png", seed=2)
    job = Job(
        inverted, GenerationOptions(image=start, end_image=end, seconds=3.0, out=str(tmp_path / "x.mp4"))
    )
    latents, _ = job._timeline()
    first = job.plan.sections[0]
    one_x = job.context(first, latents).levels[-1]  # [start, post] at 1x
    torch.testing.assert_close(one_x.latents[:, :, 1:2], job.cond.end)
    torch.testing.assert_close(one_x.latents[:, :, :1], job.cond.start)
    for later in job.plan.sections[1:]:
        assert not torch.equal(job.context(later, latents).levels[-1].latents[:, :, 1:2], job.cond.end)
    plain = Job(inverted, GenerationOptions(image=start, seconds=3.0, out=str(tmp_path / "y.mp4")))
    end_only = Job(inverted, GenerationOptions(image=end, seconds=3.0, out=str(tmp_path / "z.mp4")))
    mixed = mix_image_embeds(plain.cond.image_embeds, end_only.cond.image_embeds, 0.5)
    torch.testing.assert_close(job.cond.image_embeds, mixed)


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("model", ["inverted", "f1"])
def test_video_is_the_official_crossfade(model, request, tmp_path):
    """Our writer's pixels equal the official per-section decode + soft_append over 33 frames.

    As the official demo, the decoded windows are cross-faded as the VAE gives them (the tiny VAE
    overshoots [-1, 1] here) and clamped only when written; clamping each window first gives
    other written pixels.
    """
    from framepack.writer import soft_append

    comp = request.getfixturevalue(model)
    options = GenerationOptions(
        image=write_image(tmp_path / "s.png", seed=3), seconds=2.9, out=str(tmp_path / "v.mp4")
    )
    job = Job(comp, options)
    n, w = len(job.plan), 9
    assert n == 3 and job.frames == round(2.9 * 30)
    lat = torch.randn(1, 4, job.plan.total, 2, 2, generator=torch.Generator().manual_seed(0))
    vae = comp.codec

    def official(clamp_each_window: bool) -> torch.Tensor:
        """The official loop, written out: decode the newest 2w latents (2w + 1 with the start)
        and cross-fade over 4w - 3 frames with the video so far."""
        video = None
        for k in range(n):
            if model == "inverted":
                lo = 1 + (n - 1 - k) * w
                lo = 0 if k == n - 1 else lo
                window = lat[:, :, lo : min(lat.shape[2], lo + (w if k == 0 else 2 * w + (k == n - 1)))]
            else:
                hi = 1 + (k + 1) * w
                window = lat[:, :, 0:hi] if k == 0 else lat[:, :, hi - 2 * w : hi]
            cur = vae.vae.decode(window / vae.scaling_factor).sample  # diffusers' VAE, as is
            cur = cur.clamp(-1, 1) if clamp_each_window else cur
            if video is None:
                video = cur
            elif model == "inverted":  # the new (earlier) window is the fade's first argument
                video = soft_append(cur, video, 4 * w - 3)
            else:
                video = soft_append(video, cur, 4 * w - 3)
        return video

    video = official(clamp_each_window=False)
    assert video.shape[2] == vae.num_frames(lat.shape[2]) == 4 * n * w + 1
    assert video.abs().max() > 1  # the VAE overshoots, so the order of clamp and fade matters

    writer = job._writer()
    done = torch.zeros(lat.shape[2], dtype=torch.bool)
    done[0] = True
    for section in job.plan.sections:
        done[section.start : section.stop] = True
        writer.add(lat, done, section.start, section.stop)
    ours = writer.decode(lat, done)
    torch.testing.assert_close(ours, video, rtol=0, atol=1e-6)
    written, clamped_first = to_uint8_frames(ours), to_uint8_frames(official(clamp_each_window=True))
    assert (written != clamped_first).any()  # clamping before the fade would write other pixels
    whole = vae.decode(lat)
    assert (ours - whole).abs().max() > 1e-4  # windowed decoding is not the whole-run decoding


# ----------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("model", ["hunyuan-inverted", "hunyuan-f1"])
def test_cli_generate_exact_frames(model, model_dir, tmp_path, monkeypatch, capsys):
    import av

    from framepack.cli import main

    out = tmp_path / "out.mp4"
    image = write_image(tmp_path / "s.png", seed=4, size=(48, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(
            ["generate", "--model", model, "--model-dir", str(model_dir), "--image", image, "--prompt", PROMPT,
             "--seconds", "2", "--steps", "2", "--device", "cpu", "--out", str(out), "--quiet",
             "--bucket", str(BUCKET)]
        )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    with av.open(str(out)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 60
    assert f"{out} (60 frames" in capsys.readouterr().out


def test_cli_missing_part_exit_2(model_dir, tmp_path, capsys):
    import shutil

    from framepack.cli import main

    partial = tmp_path / "partial"
    shutil.copytree(model_dir / "FramePackI2V_HY", partial / "FramePackI2V_HY")
    shutil.copytree(model_dir / "flux_redux_bfl", partial / "flux_redux_bfl")
    image = write_image(tmp_path / "s.png", seed=4)
    code = main(
        ["generate", "--model", "hunyuan-inverted", "--model-dir", str(partial), "--image", image,
         "--device", "cpu", "--out", str(tmp_path / "x.mp4")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "hunyuanvideo-community/HunyuanVideo" in err and str(partial) in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_fill_between_sections_keeps_frame_count(inverted, tmp_path):
    """Endpoints order: a section joining two decoded runs fades on both sides; counts stay exact."""
    options = GenerationOptions(
        image=write_image(tmp_path / "s.png", seed=3),
        seconds=4.5,
        plan="endpoints",
        out=str(tmp_path / "v.mp4"),
    )
    job = Job(inverted, options)
    assert len(job.plan) == 4
    lat = torch.randn(1, 4, job.plan.total, 2, 2, generator=torch.Generator().manual_seed(1))
    writer, done = job._writer(), torch.zeros(job.plan.total, dtype=torch.bool)
    done[0] = True
    for section in job.plan.sections:
        done[section.start : section.stop] = True
        writer.add(lat, done, section.start, section.stop)
        runs = writer.decode(lat, done)
        assert runs.shape[2] == sum(inverted.codec.num_frames(b - a) for a, b in _runs(done))
    assert list(writer._cache) == [(0, job.plan.total)]


def _runs(done):
    from framepack.writer import generated_runs

    return generated_runs(done)


def test_resume_equals_uninterrupted(inverted, tmp_path, monkeypatch):
    """A stopped and resumed job re-plays the cross-fades in order: the same pixels."""
    import framepack.writer as pipeline
    from framepack.resume import StopFlag

    written = {}
    write_video = pipeline.write_video

    def capture(path, pixels, *args, **kwargs):  # H.264 itself may differ run to run: compare pixels
        written[Path(path).name] = pixels.clone()
        return write_video(path, pixels, *args, **kwargs)

    monkeypatch.setattr(pipeline, "write_video", capture)
    image = write_image(tmp_path / "s.png", seed=5)

    def options(name, **kw):
        return GenerationOptions(
            image=image, seconds=2.9, steps=1, sampler="euler", out=str(tmp_path / name), **kw
        )

    pipe = FramePackPipeline(inverted)
    full = pipe.generate(options("full.mp4"), progress=False)
    stop = StopFlag(on_signal=None)
    calls = []

    def tick(*args):
        calls.append(1)
        if len(calls) == 2:  # one step per section: stop after the second of three sections
            stop.request()

    assert pipe.generate(options("part.mp4"), progress=False, stop=stop, callback=tick).stopped
    done = pipe.generate(options("part.mp4", resume=True), progress=False)
    assert torch.equal(done.latents, full.latents)
    assert written["full.mp4"].shape[1] == written["part.mp4"].shape[1] == round(2.9 * 30)
    assert torch.equal(written["full.mp4"], written["part.mp4"])


def test_low_vram_install_gives_the_same_results(model_dir, inverted):
    """Low-VRAM mode (CUDA only in use) only moves weights: the same outputs (checked on the CPU)."""
    from framepack.hunyuan.components import install_low_vram

    comp = load("hunyuan-inverted", model_dir)  # a fresh copy: the install patches its modules
    prompt, image_fn, codec = install_low_vram(
        comp.transformer,
        comp.prompt_encoder,
        comp.image_encoder.encoder,
        comp.codec,
        torch.device("cpu"),
        2,
        0,
    )
    assert codec.crossfade_decode and codec.num_frames(10) == inverted.codec.num_frames(10) == 37
    pixels = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    torch.testing.assert_close(codec.encode(pixels), inverted.codec.encode(pixels), rtol=0, atol=0)
    lat = torch.randn(1, 4, 2, 4, 4)
    torch.testing.assert_close(codec.decode(lat), inverted.codec.decode(lat), rtol=0, atol=0)
    ours, plain = prompt.encode([PROMPT]), inverted.prompt_encoder.encode([PROMPT])
    torch.testing.assert_close(ours.states, plain.states, rtol=0, atol=0)
    torch.testing.assert_close(ours.pooled, plain.pooled, rtol=0, atol=0)
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(image_fn(images), inverted.image_encoder(images), rtol=0, atol=0)
    x = torch.randn(1, 4, 3, 4, 4)
    args = (x, torch.tensor([500.0]), plain.states, plain.mask, plain.pooled, torch.arange(3)[None])
    with torch.no_grad():
        ours, plain = (
            m(*args, guidance=torch.tensor([1e4])) for m in (comp.transformer, inverted.transformer)
        )
    torch.testing.assert_close(ours, plain, rtol=0, atol=0)
