"""framepack.discretize: history discretization (SPEC sec. 4), its codebook, and how training and
generation apply it through the one context builder."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import Tensor

from framepack.cli import main as cli_main
from framepack.codecs.base import codec_from_config
from framepack.components import load_components
from framepack.context import STRATEGY_LAYOUT, history_positions, section_context
from framepack.discretize import Codebook, fit_codebook, latent_vectors
from framepack.errors import UserError
from framepack.model_bundle import CODEBOOK_NAME, BundleMeta, load_bundle, save_bundle
from framepack.options import GenerationOptions
from framepack.packing import parse_schedule
from framepack.pipeline import FramePackPipeline, Job
from framepack.train.config import PRESETS
from framepack.train.data import draw_micro_batches, make_source
from framepack.train.layouts import SectionLayout, build_context
from framepack.train.loop import history_codebook, read_log, train

from .pipeline_fixtures import tiny_components, write_image

TINY = PRESETS["tiny-test"]
ONE_X = (1, 2, 2)


def _blobs(seed: int, per: int = 200) -> tuple[Tensor, Tensor]:
    """Four well-separated Gaussian blobs in 3-D: (4 * per, 3) vectors and the (4, 3) centres."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0, 0.0], [20.0, 0.0, 0.0], [0.0, 20.0, 0.0], [0.0, 0.0, 20.0]])
    x = centres.repeat_interleave(per, 0) + 0.5 * torch.randn(4 * per, 3, generator=gen)
    return x, centres


def _codebook(channels: int, k: int = 8, seed: int = 0) -> Codebook:
    vectors = torch.randn(500, channels, generator=torch.Generator().manual_seed(seed))
    return fit_codebook(vectors, k, seed=seed).codebook


def test_quantization_known_answer():
    book = Codebook(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
    # (1, C=2, T=1, h=2, w=2): vectors (1, 1), (9, 1), (-1, 8), (6, 5)
    vectors = torch.tensor([[1.0, 1.0], [9.0, 1.0], [-1.0, 8.0], [6.0, 5.0]])
    latents = vectors.T.reshape(1, 2, 1, 2, 2).double()
    # (6, 5): 41 to (10, 0), 61 to (0, 0) and to (0, 10)
    assert book.indices(latents).flatten().tolist() == [0, 1, 2, 1]
    out = book(latents)
    assert out.dtype == torch.float64 and out.shape == latents.shape
    want = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 0.0]])
    assert torch.equal(latent_vectors(out), want)
    assert torch.equal(book(out), out)  # entries are fixed points
    with pytest.raises(ValueError, match="latents must be"):
        book(torch.zeros(1, 3, 1, 2, 2))
    with pytest.raises(ValueError, match="K >= 2"):
        Codebook(torch.zeros(1, 2))


def test_fit_is_seeded_reproducible_and_finds_separated_clusters():
    x, centres = _blobs(0)
    a = fit_codebook(x, 4, seed=0)
    b = fit_codebook(x, 4, seed=0)
    assert torch.equal(a.codebook.centroids, b.codebook.centroids) and a.inertia == b.inertia
    # four separated blobs: each centre found (to the blob's sampling error), inertia ~ 3 * 0.25 per vector
    found = a.codebook.centroids[a.codebook.indices(centres.T.reshape(1, 3, 1, 2, 2)).flatten()]
    assert torch.allclose(found, centres, atol=0.2)
    assert a.inertia / len(x) == pytest.approx(0.75, rel=0.15)
    # more entries than clusters: another seed gives another codebook
    c, d = fit_codebook(x, 16, seed=0), fit_codebook(x, 16, seed=1)
    assert not torch.equal(c.codebook.centroids, d.codebook.centroids)
    assert torch.equal(c.codebook.centroids, fit_codebook(x, 16, seed=0).codebook.centroids)


def test_fit_refuses_bad_k():
    x, _ = _blobs(0, per=2)  # 8 vectors
    for k, message in [(1, "K must be"), (0, "K must be"), (9, "more than the 8"), (True, "K must be")]:
        with pytest.raises(ValueError, match=message):
            fit_codebook(x, k, seed=0)
    with pytest.raises(ValueError, match="distinct"):
        fit_codebook(torch.ones(10, 3), 3, seed=0)


def test_history_is_discretized_and_anchors_stay_exact():
    timeline = torch.randn(1, 6, 12, 2, 2, generator=torch.Generator().manual_seed(1))
    book = _codebook(6)
    args = (timeline, torch.arange(12), range(1, 6), range(6, 8), parse_schedule("released-f1"), "forward")
    plain = section_context(*args, anchors=(0,))
    ctx = section_context(*args, anchors=(0,), quantize=book)
    one = next(lv for lv in ctx.levels if lv.kernel == ONE_X)
    assert torch.equal(one.latents[:, :, 0], timeline[:, :, 0])  # the start image: exact
    history = one.latents[:, :, 1:]  # the nearest history frame
    assert torch.equal(history, book(timeline[:, :, 5:6]))
    assert not torch.equal(history, timeline[:, :, 5:6])
    for lv, lp in zip(ctx.levels, plain.levels):  # every level sees discretized history
        assert torch.equal(lv.indices, lp.indices)
        if lv.kernel != ONE_X:
            assert not torch.equal(lv.latents, lp.latents)


@pytest.mark.parametrize("strategy", ["forward", "inverted"])
def test_training_and_generation_discretize_a_section_identically(strategy, tmp_path):
    """Job.context (a model whose bundle has a codebook) and training's build_context give the
    same discretized context for every section of a real job; without the codebook they differ."""
    components = tiny_components(plan=strategy)
    book = _codebook(components.codec.latent_channels, k=16)
    components = replace(components, history_codebook=book)
    options = GenerationOptions(
        image=write_image(tmp_path / "s.png"), seconds=6.0, out=str(tmp_path / "v.mp4")
    )
    job = Job(components, options)
    total = job.plan.total
    latents = torch.randn(1, 192, total, 4, 4, generator=torch.Generator().manual_seed(0))
    schedule, layout = parse_schedule(components.spec.schedule), STRATEGY_LAYOUT[strategy]
    differs = 0
    for section in job.plan:
        window = section.stop - section.start
        history = history_positions(layout, total, section.start, window)
        lay = SectionLayout(layout, total, section.start, window, history)
        trained, _, _ = build_context(latents, torch.arange(total), lay, schedule, quantize=book)
        generated = job.context(section, latents)
        plain, _, _ = build_context(latents, torch.arange(total), lay, schedule)
        for x, y, z in zip(generated.levels, trained.levels, plain.levels):
            assert torch.equal(x.indices, y.indices) and torch.equal(x.latents, y.latents)
            differs += not torch.equal(x.latents, z.latents)
    assert differs > 0


def test_training_batches_use_the_codebook():
    config = TINY.replace(micro_batch=2, batch_size=2)
    codec = codec_from_config(dict(config.codec))
    source = make_source(config, codec)
    book = _codebook(codec.latent_channels)
    schedule = parse_schedule(config.schedule)
    plain = draw_micro_batches(config, source, codec, schedule, 0, 0)
    quant = draw_micro_batches(config, source, codec, schedule, 0, 0, quantize=book)
    assert [torch.equal(a.target, b.target) for a, b in zip(plain, quant)] == [True] * len(plain)
    changed = [
        not torch.equal(la.latents, lb.latents)
        for a, b in zip(plain, quant)
        for la, lb in zip(a.context.levels, b.context.levels)
    ]
    assert any(changed)


def test_released_mode_with_a_codebook_is_refused(tmp_path):
    components = replace(tiny_components(mode="released", window=9), history_codebook=_codebook(192))
    options = GenerationOptions(
        image=write_image(tmp_path / "s.png"), seconds=2.0, out=str(tmp_path / "v.mp4")
    )
    with pytest.raises(UserError, match="general-mode"):
        Job(components, options)


def test_bundle_round_trip(tmp_path):
    c = tiny_components()
    book = _codebook(c.codec.latent_channels, k=8)
    meta = BundleMeta(fps=8, height=16, width=16, window=2, schedule="released-f1", history_codebook=8)
    path = tmp_path / "b"
    save_bundle(path, c.transformer, c.prompt_encoder, c.codec, meta, codebook=book)
    assert json.loads((path / "framepack.json").read_text())["history_codebook"] == 8
    loaded = load_bundle(path)
    assert loaded.meta.history_codebook == 8 and torch.equal(loaded.codebook.centroids, book.centroids)
    components = load_components(str(path))
    assert torch.equal(components.history_codebook.centroids, book.centroids)
    with pytest.raises(ValueError, match="history_codebook"):
        save_bundle(tmp_path / "c", c.transformer, c.prompt_encoder, c.codec, meta)
    with pytest.raises(ValueError, match="history_codebook"):
        BundleMeta(fps=8, height=16, width=16, window=2, schedule="released-f1", history_codebook=1)
    (path / CODEBOOK_NAME).unlink()
    with pytest.raises(UserError, match="history codebook is missing"):
        load_bundle(path)
    plain = replace(meta, history_codebook=None)
    save_bundle(tmp_path / "d", c.transformer, c.prompt_encoder, c.codec, plain)
    assert load_bundle(tmp_path / "d").codebook is None and not (tmp_path / "d" / CODEBOOK_NAME).exists()


def test_generation_from_a_bundle_applies_its_codebook(tmp_path, monkeypatch):
    """A real generate from a saved bundle hands the bundle's codebook to every section_context."""
    c = tiny_components()
    book = _codebook(c.codec.latent_channels, k=8)
    meta = BundleMeta(
        fps=8, height=16, width=16, window=2, schedule="released-f1", steps=2, history_codebook=8
    )
    save_bundle(tmp_path / "b", c.transformer, c.prompt_encoder, c.codec, meta, codebook=book)
    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("quantize"))
        return section_context(*args, **kwargs)

    monkeypatch.setattr("framepack.context.section_context", spy)  # plan_context calls it
    pipe = FramePackPipeline.from_pretrained(tmp_path / "b")
    pipe.generate(image=write_image(tmp_path / "s.png"), seconds=2.0, output_type="np", progress=False)
    assert len(seen) >= 2 and all(q is not None and torch.equal(q.centroids, book.centroids) for q in seen)


def _train(*argv: str) -> int:
    return cli_main(["train", *argv, "--no-progress"])


def test_cli_trains_with_discretized_history_and_resumes_exactly(tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert (
        _train("--preset", "tiny-test", "--out", str(whole), "--steps", "4", "--discretize-history", "8") == 0
    )
    assert json.loads((whole / "config.json").read_text())["discretize_history"] == 8
    bundle = load_bundle(whole / "bundle")
    assert bundle.meta.history_codebook == 8 and bundle.codebook.channels == bundle.codec.latent_channels
    assert torch.equal(load_bundle(whole / "model").codebook.centroids, bundle.codebook.centroids)
    # the codebook is the run's seeded fit on its own training data
    config = TINY.replace(steps=4, discretize_history=8)
    refit = history_codebook(config, make_source(config, bundle.codec), bundle.codec)
    assert torch.equal(refit.centroids, bundle.codebook.centroids)
    # stopped after 2 steps and resumed: the same losses, bit for bit
    assert (
        _train("--preset", "tiny-test", "--out", str(part), "--steps", "2", "--discretize-history", "8") == 0
    )
    assert _train("--out", str(part), "--resume", "--steps", "4") == 0
    assert [r["loss"] for r in read_log(part / "log.jsonl")] == [
        r["loss"] for r in read_log(whole / "log.jsonl")
    ]
    # and differ from a run with continuous history (the first two cannot: the zero-initialised
    # output layer makes step 1's loss context-free, and Adam's first update is a sign)
    plain = train(TINY.replace(steps=4), tmp_path / "plain", progress=False)
    losses = [r["loss"] for r in read_log(whole / "log.jsonl")]
    assert [r["loss"] for r in read_log(plain / "log.jsonl")][2:] != losses[2:]


def test_finetune_keeps_the_codebook_unless_k_differs(tmp_path, capsys):
    base = tmp_path / "base"
    assert (
        _train("--preset", "tiny-test", "--out", str(base), "--steps", "1", "--discretize-history", "8") == 0
    )
    kept = tmp_path / "kept"
    assert (
        _train("--preset", "tiny-test", "--out", str(kept), "--steps", "1", "--init", str(base / "bundle"))
        == 0
    )
    assert json.loads((kept / "config.json").read_text())["discretize_history"] == 8
    assert torch.equal(
        load_bundle(kept / "bundle").codebook.centroids, load_bundle(base / "bundle").codebook.centroids
    )
    capsys.readouterr()
    other = tmp_path / "other"
    argv = (
        "--preset",
        "tiny-test",
        "--out",
        str(other),
        "--init",
        str(base / "bundle"),
        "--discretize-history",
        "16",
    )
    assert _train(*argv) == 2
    err = capsys.readouterr().err
    assert "--discretize-history 8" in err and len(err.strip().splitlines()) == 1
    assert not other.exists()
    # a resume keeps the run's K
    assert _train("--out", str(kept), "--resume", "--discretize-history", "16") == 2
    assert "a resume keeps it" in capsys.readouterr().err


@pytest.mark.parametrize(
    "k, message", [("1", "at least 2"), ("0", "at least 2"), ("-3", "at least 2"), ("5000", "latent vectors")]
)
def test_bad_codebook_sizes_are_one_line_errors(k, message, tmp_path, capsys):
    out = tmp_path / "r"
    assert _train("--preset", "tiny-test", "--out", str(out), "--discretize-history", k) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()  # a failed start leaves nothing behind
