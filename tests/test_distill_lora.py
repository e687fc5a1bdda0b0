# ruff: noqa: F811  (the fixtures of test_lora_train are imported by name)
"""`framepack distill --model hunyuan-*`: a few-step LoRA student of the released models, on tiny
random components in the released layouts (the fixtures of tests/test_lora_train.py).

- the student's few-step loss on held-out sections falls; the LoRA files say its steps;
- the teacher is the base model: adapters off gives the base output bit for bit;
- `--resume` continues the exact loss sequence; the CLI refuses what the released path lacks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_lora_train import cache_dir, data_dir, model_dir, one_thread  # noqa: F401  (fixtures)

from framepack.cli import main
from framepack.distill.labels import distill_generator
from framepack.distill.lora import LoraDistillConfig, LoraLabeller, adapters_off, distill_lora
from framepack.hunyuan.latent_cache import LatentCache
from framepack.lora_train.adapters import LoraSpec, attach_lora, detach_lora, load_adapters
from framepack.lora_train.loop import Sources, load_base
from framepack.lora_train.samples import draw_sample
from framepack.train.loop import read_log
from framepack.train.loss import flow_matching_loss

TINY = dict(window=2, rank=4, lr=3e-3, steps=6, dtype="fp32", checkpoint_every=3, threads=1,
            student_steps=2, teacher_steps=4)  # fmt: skip


def config(**changes) -> LoraDistillConfig:
    return LoraDistillConfig(**{**TINY, **changes})


def sources(model_dir: Path, cache_dir: Path) -> Sources:
    return Sources(str(cache_dir), str(model_dir / "FramePackI2V_HY"))


@pytest.fixture(scope="module")
def student(model_dir, cache_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("distill") / "run"
    return distill_lora(config(), run, sources(model_dir, cache_dir), progress=False)


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_log(run / "log.jsonl")]


def held_out_loss(model, cfg: LoraDistillConfig, cache: LatentCache) -> float:
    """The few-step loss on sections no step drew: the model's velocity against the base
    model's flow map over each section's interval."""
    labeller, total = LoraLabeller(cfg), 0.0
    for i in range(6):
        step = 10_000 + i
        s = labeller.label(model, draw_sample(cfg, cache, step, 0), distill_generator(cfg.seed, step, 0, 0))
        mask = torch.ones(s.text_states.shape[:2], dtype=torch.bool)
        guidance = torch.full((1,), cfg.guidance * 1000.0)

        def velocity(x, sigma, s=s, mask=mask, guidance=guidance):
            return model(x, sigma * 1000.0, s.text_states, mask, s.pooled, s.target_indices,
                         context=s.context, image_embeds=s.image_embeds, guidance=guidance)  # fmt: skip

        with torch.no_grad():
            total += float(flow_matching_loss(velocity, s.target, s.noise, s.sigma).sum())
    return total / 6


def test_distillation_lowers_the_few_step_loss_on_held_out_sections(model_dir, cache_dir, tmp_path):
    cfg = config(steps=30, checkpoint_every=30)
    run = distill_lora(cfg, tmp_path / "run", sources(model_dir, cache_dir), progress=False)
    cache = LatentCache(cache_dir)
    base = load_base(str(model_dir / "FramePackI2V_HY"), torch.float32)
    before = held_out_loss(base, cfg, cache)
    handle = load_adapters(base, run / "lora.safetensors")
    after = held_out_loss(base, cfg, cache)
    detach_lora(handle)
    print(f"held-out few-step loss: base {before:.4f}, student {after:.4f}")
    assert after < 0.8 * before, (before, after)


def test_the_lora_files_name_the_students_steps(student):
    from safetensors import safe_open

    with safe_open(str(student / "lora.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["framepack_student_steps"] == "2" and meta["framepack_sampler"] == "euler"
    assert len(losses(student)) == 6 and all(v > 0 for v in losses(student))


def test_the_teacher_is_the_base_model_with_its_adapters_off(model_dir, cache_dir):
    cfg = config()
    base = load_base(str(model_dir / "FramePackI2V_HY"), torch.float32)
    s = draw_sample(cfg, LatentCache(cache_dir), 0, 0)
    mask = torch.ones(s.text_states.shape[:2], dtype=torch.bool)

    def call():
        with torch.no_grad():
            return base(s.target, torch.tensor([500.0]), s.text_states, mask, s.pooled, s.target_indices,
                        context=s.context, image_embeds=s.image_embeds, guidance=torch.tensor([10000.0]))  # fmt: skip

    plain = call()
    handle = attach_lora(base, LoraSpec(rank=4), seed=1)
    with torch.no_grad():
        for name, p in base.named_parameters():
            if ".lora_B." in name:
                p.normal_()
    assert not torch.equal(call(), plain)  # the adapters change the output
    with adapters_off(base):
        assert torch.equal(call(), plain)
    assert not torch.equal(call(), plain)  # and come back on
    detach_lora(handle)


def test_resume_continues_the_exact_run(student, model_dir, cache_dir, tmp_path):
    run = tmp_path / "resumed"
    distill_lora(config(steps=3), run, sources(model_dir, cache_dir), progress=False)
    distill_lora(config(), run, sources(model_dir, cache_dir), resume=True, progress=False)
    assert losses(run) == losses(student)


def test_cli_distils_a_released_model_and_refuses_what_it_lacks(model_dir, cache_dir, tmp_path, capsys):
    base = ["distill", "--model", "hunyuan-inverted", "--cache", str(cache_dir),
            "--transformer-dir", str(model_dir / "FramePackI2V_HY"), "--no-progress"]  # fmt: skip
    cases = [
        ([*base, "--out", str(tmp_path / "a"), "--cfg", "2"], "guidance-distilled"),
        ([*base, "--out", str(tmp_path / "a"), "--self-rollout", "0.5"], "--self-rollout is for bundle teachers"),
        ([*base, "--out", str(tmp_path / "a"), "--student-steps", "8"], "student_steps must be an integer from 1 to 4"),
        ([*base, "--out", str(tmp_path / "a"), "--teacher", "x"], "--teacher names a bundle"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "a").exists()
    run = tmp_path / "cli"
    argv = [*base, "--out", str(run), "--student-steps", "2", "--teacher-steps", "2", "--steps", "2",
            "--rank", "4", "--threads", "1", "--config", str(_fp32(tmp_path))]  # fmt: skip
    assert main(argv) == 0
    assert "--steps 2 --sampler euler" in capsys.readouterr().out and (run / "lora.safetensors").is_file()


def _fp32(folder: Path) -> Path:
    path = folder / "fp32.json"
    path.write_text('{"dtype": "fp32", "window": 2}')
    return path
