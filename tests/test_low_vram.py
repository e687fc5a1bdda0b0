"""Low-VRAM mode keeps every phase under its estimate; the estimate on the released sizes.

On the CPU the "device" is the CPU too, so placement is checked by accounting instead:
- every byte allocated during a phase (torch's profiler, alloc and free events in order) is a
  byte the phase would hold on the GPU: streamed layer copies, visiting weights, activations;
- no op of a phase may compute on a resting (host) weight: that is what putting a whole model
  on the GPU, or forgetting to stream one, looks like here (a dispatch mode watches every op);
- the ledger of the streamers says how many weight bytes were on the device at once.
Each phase's measured peak must stay under `framepack.hunyuan.budget.phases` for the same
tiny models (weights + activations; the transformer's resident part is counted separately).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).parent))
from hunyuan_fixtures import build_hunyuan_dir, build_redux_dir

pytest.importorskip("diffusers")
from framepack.errors import UserError
from framepack.hunyuan.budget import GIB, job_sizes, phases, plan_memory, released_sizes
from framepack.hunyuan.components import install_low_vram
from framepack.hunyuan.image import SiglipImageEncoder
from framepack.hunyuan.text import HunyuanPromptEncoder
from framepack.hunyuan.vae import HunyuanVideoVAE
from framepack.models import PRESETS, PackedTransformer

CPU = torch.device("cpu")
LATENT_HW, WINDOW, KEEP = (4, 4), 9, 1


# ----------------------------------------------------------------------------- the released sizes


def test_released_sizes_built_on_meta():
    sizes = released_sizes()
    params = {
        "llama": sizes.llama.total / 2,
        "clip": sizes.clip.total / 2,
        "siglip": sizes.siglip.total / 2,
        "vae": sizes.vae / 2,
        "transformer": sizes.transformer.total / 2,
    }
    expected = {
        "llama": 7.505e9,
        "clip": 123.06e6,
        "siglip": 428.2e6,
        "vae": 246.5e6,
        "transformer": 12.874e9,
    }
    for name, count in expected.items():
        assert params[name] == pytest.approx(count, rel=1e-3), name
    assert len(sizes.transformer.blocks) == 60
    assert sizes.llama.lookup / 2 == 128320 * 4096  # looked up on the host, never on the GPU


def test_plan_keeps_every_phase_under_the_budget():
    sizes = released_sizes()
    normal = plan_memory(sizes, low_vram=False)
    assert normal.phase("prompt").resident > 14.2 * GIB + 24 * GIB  # LLaMA + CLIP-L, transformer
    streaming = plan_memory(sizes, low_vram=True, pin_limit=4 * GIB)
    assert streaming.keep == 0 and streaming.pinned <= 4 * GIB
    assert streaming.phase("prompt").weights < 0.5 * GIB  # one LLaMA layer + CLIP-L's rest and a layer
    plans = {gb: plan_memory(sizes, low_vram=True, budget=gb * GIB, pin_limit=8 * GIB) for gb in (6, 8, 12)}
    for gb, plan in plans.items():
        assert [p.name for p in plan.phases] == ["prompt", "image", "sampling", "decode"]
        assert all(p.total <= gb * GIB for p in plan.phases), plan
        assert plan.pinned <= 8 * GIB
    assert 0 < plans[6].keep < plans[8].keep < plans[12].keep < 60
    assert plan_memory(sizes, low_vram=True, budget=200 * GIB).low_vram is False  # all fits: no streaming
    with pytest.raises(UserError, match=r"--vram-gb 3: even streaming every block needs 4\.\d GiB"):
        plan_memory(sizes, low_vram=True, budget=3 * GIB)
    assert "estimated VRAM (low-VRAM, budget 6.0 GiB): peak" in plans[6].summary()


def test_estimate_cli_needs_no_weights(capsys):
    from framepack.cli import main

    assert main(["generate", "--model", "hunyuan-inverted", "--estimate", "--vram-gb", "6"]) == 0
    out = capsys.readouterr().out
    assert "budget 6.0 GiB" in out and all(
        f"  {p} " in out for p in ("prompt", "image", "sampling", "decode")
    )
    assert main(["generate", "--model", "hunyuan-inverted", "--estimate", "--vram-gb", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "raise --vram-gb" in err
    assert main(["generate", "--model", "hunyuan-f1", "--estimate", "--vram-gb", "nan"]) == 2


# ----------------------------------------------------------------------------- accounting on the CPU


MOVES = {"_to_copy", "is_pinned", "detach", "alias"}  # copying a resting weight to the device


class RestingReads(TorchDispatchMode):
    """Counts ops that read a resting weight (by storage address)."""

    def __init__(self, resting: set[int]) -> None:
        super().__init__()
        self.resting = resting
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] not in MOVES:
            for t in tree_flatten((args, kwargs or {}))[0]:
                if (
                    isinstance(t, torch.Tensor)
                    and t.numel()
                    and t.untyped_storage().data_ptr() in self.resting
                ):
                    self.reads.append(str(func))
        return func(*args, **(kwargs or {}))


def measure(fn, resting: set[int]) -> tuple[int, list[str]]:
    """(peak bytes allocated while `fn` runs, the ops that read resting weights)."""
    watch = RestingReads(resting)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, watch:
        fn()
    running = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        running += event.self_cpu_memory_usage
        peak = max(peak, running)
    return peak, watch.reads


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny tokenizer's template length differs from 95
        prompt = HunyuanPromptEncoder.from_dir(
            build_hunyuan_dir(root / "HunyuanVideo"), device=CPU, dtype=torch.float32
        )
    image = SiglipImageEncoder.from_dir(
        build_redux_dir(root / "flux_redux_bfl"), device=CPU, dtype=torch.float32
    )
    vae = HunyuanVideoVAE.from_dir(root / "HunyuanVideo", device=CPU, dtype=torch.float32)
    torch.manual_seed(0)
    transformer = PackedTransformer(PRESETS["tiny"].replace(pooled_projection_dim=32)).eval()
    sizes = job_sizes(
        prompt.text_encoder,
        prompt.text_encoder_2,
        image.image_encoder,
        vae.vae,
        transformer,
        LATENT_HW,
        WINDOW,
    )
    parts = install_low_vram(transformer, prompt, image, vae, CPU, keep=KEEP, pin_limit=0)
    blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks][KEEP:]
    lookups = {id(m.get_input_embeddings().weight) for m in prompt.modules()}
    watched = [*prompt.modules(), image.image_encoder, vae.vae, *blocks]
    resting = {
        p.untyped_storage().data_ptr() for m in watched for p in m.parameters() if id(p) not in lookups
    }
    ledger = parts[2].ledger
    return dict(
        parts=parts, sizes=sizes, resting=resting, ledger=ledger, transformer=transformer, prompt=prompt
    )


def _phase_calls(s):
    prompt, image_fn, codec = s["parts"]
    transformer = s["transformer"]
    g = torch.Generator().manual_seed(0)
    h, w = LATENT_HW
    pixels = torch.rand(1, 3, 1, 8 * h, 8 * w, generator=g) * 2 - 1

    def sampling():
        embeds = prompt.encode(["a cat walks"])
        with torch.no_grad():
            transformer(
                torch.randn(1, 4, WINDOW, h, w, generator=g), torch.tensor([500.0]), embeds.states, embeds.mask,
                embeds.pooled, torch.arange(WINDOW)[None], image_embeds=image_fn(pixels[:, :, 0]),
                guidance=torch.tensor([1e4]),
            )  # fmt: skip

    return {
        "prompt": lambda: prompt.encode(["a cat walks on the grass"]),
        "image": lambda: (image_fn(pixels[:, :, 0]), codec.encode(pixels)),
        "sampling": sampling,
        "decode": lambda: codec.decode(torch.randn(1, 4, 2 * WINDOW + 1, h, w, generator=g)),
    }


@pytest.mark.parametrize("name", ["prompt", "image", "decode"])
def test_phase_stays_under_its_estimate(streamed, name):
    estimate = {p.name: p for p in phases(streamed["sizes"], True, KEEP)}[name]
    streamed["ledger"].reset()
    resident = streamed["ledger"].resident  # the transformer's part, on the device for the job
    peak, reads = measure(_phase_calls(streamed)[name], streamed["resting"])
    assert reads == [], f"{name} computed on resting weights: {sorted(set(reads))[:5]}"
    print(f"{name}: measured {peak} bytes, estimate {estimate.weights + estimate.activations}")
    assert 0 < peak <= estimate.weights + estimate.activations, (peak, estimate)
    assert resident == estimate.resident
    assert streamed["ledger"].peak - resident <= estimate.weights


def test_sampling_streams_blocks_under_the_estimate(streamed):
    """Sampling (here with its prompt and image encodings): one block at a time beyond the kept."""
    sizes = streamed["sizes"]
    estimate = {p.name: p for p in phases(sizes, True, KEEP)}
    streamed["ledger"].reset()
    resident = streamed["ledger"].resident
    peak, reads = measure(_phase_calls(streamed)["sampling"], streamed["resting"])
    assert reads == []
    bound = sum(estimate[n].weights + estimate[n].activations for n in ("prompt", "image", "sampling"))
    assert peak <= bound
    assert streamed["ledger"].peak - resident <= max(
        estimate[n].weights for n in ("prompt", "image", "sampling")
    )
    assert streamed["ledger"].peak - resident >= max(sizes.transformer.blocks[KEEP:])  # a block did stream


def test_prompt_weights_stream_layer_by_layer(streamed):
    """At most the non-layer weights and one layer of LLaMA / CLIP-L are on the device at once."""
    sizes = streamed["sizes"]
    streamed["ledger"].reset()
    resident = streamed["ledger"].resident
    streamed["parts"][0].encode(["a cat"])
    on_device = streamed["ledger"].peak - resident
    assert on_device == sizes.llama.streamed + sizes.clip.streamed - min(
        sizes.llama.largest_layer, sizes.clip.largest_layer
    )
    assert on_device < sizes.llama.total - sizes.llama.lookup  # never the whole encoder


def test_accounting_sees_an_encoder_that_is_not_streamed(streamed):
    """The check catches what the issue found: the text encoders run whole, unstreamed."""
    _, reads = measure(
        lambda: streamed["prompt"].text_encoder_2(torch.zeros(1, 77, dtype=torch.long)), streamed["resting"]
    )
    assert reads
