"""Tests for framepack.text: PromptEmbeds, the vocabulary and the small prompt encoder."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from framepack.errors import UserError
from framepack.text import (
    PromptEmbeds,
    PromptEncoder,
    VocabEncoder,
    VocabEncoderConfig,
    Vocabulary,
    tokenize,
)

CAPTIONS = [
    "A red ball bounces to the left.",
    "a blue square slides right, slowly",
    "The red square bounces; the blue ball stays.",
]


def _encoder(layers: int = 1, seed: int = 0) -> VocabEncoder:
    config = VocabEncoderConfig(width=16, pooled_width=8, layers=layers, heads=2, max_length=12)
    return VocabEncoder.from_captions(CAPTIONS, config, seed=seed).eval()


def test_tokenize_lowercases_and_splits_punctuation():
    assert tokenize("A red Ball, left.") == ["a", "red", "ball", ",", "left", "."]
    assert tokenize("  ") == []


def test_vocabulary_build_orders_by_frequency_then_spelling():
    vocab = Vocabulary.build(["b a a", "c b a", "d"])
    assert vocab.tokens == ["<pad>", "<unk>", "<empty>", "a", "b", "c", "d"]
    assert vocab.id("a") == 3 and vocab.id("zebra") == 1
    assert len(Vocabulary.build(["b a a", "c b a", "d"], min_count=2)) == 5
    assert len(Vocabulary.build(["b a a", "c b a", "d"], max_size=4)) == 4


def test_vocabulary_json_round_trip(tmp_path):
    vocab = Vocabulary.build(CAPTIONS)
    vocab.save(tmp_path / "vocab.json")
    assert json.loads((tmp_path / "vocab.json").read_text())["tokens"] == vocab.tokens
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(UserError, match="not a framepack vocabulary"):
        Vocabulary.load(tmp_path / "other.json")


def test_encoder_satisfies_protocol_and_shapes():
    encoder = _encoder()
    assert isinstance(encoder, PromptEncoder)
    out = encoder.encode(["a red ball", "the blue square slides right , slowly", "ball"])
    assert out.states.shape == (3, 7, 16)
    assert out.pooled.shape == (3, 8)
    assert out.mask.dtype == torch.bool
    assert out.mask.sum(1).tolist() == [3, 7, 1]


def test_padding_is_masked_and_does_not_change_states():
    encoder = _encoder(layers=2)
    alone = encoder.encode(["a red ball"])
    batch = encoder.encode(["a red ball", "the blue square slides right , slowly"])
    assert torch.allclose(batch.states[0, :3], alone.states[0], atol=1e-6)
    assert torch.allclose(batch.pooled[0], alone.pooled[0], atol=1e-6)
    assert torch.all(batch.states[0, 3:] == 0)
    assert batch.mask[0].tolist() == [True] * 3 + [False] * 4


def test_empty_prompt_gives_one_valid_token():
    encoder = _encoder()
    out = encoder.encode(["", "a red ball"])
    assert out.mask[0].tolist() == [True, False, False]
    assert torch.isfinite(out.states).all() and torch.isfinite(out.pooled).all()
    only = encoder.encode([""])
    assert only.states.shape == (1, 1, 16) and only.mask.tolist() == [[True]]
    ids, _ = encoder.tokenize_batch(["  "])
    assert ids.tolist() == [[encoder.vocab.id("<empty>")]]


def test_unknown_words_reported_once_per_encoder(caplog):
    encoder = _encoder()
    with caplog.at_level(logging.WARNING, logger="framepack.text.vocab"):
        ids, _ = encoder.tokenize_batch(["a green ball", "green zebra"])
        encoder.encode(["green zebra zebra"])
    unk = encoder.vocab.id("<unk>")
    assert ids[0, 1] == unk and ids[1, 0] == unk and ids[1, 1] == unk
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1  # one line per batch, each word once per encoder
    assert "green, zebra" in messages[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="framepack.text.vocab"):
        _encoder().encode(["green"])  # a new encoder reports again
    assert len(caplog.records) == 1 and "green" in caplog.records[0].getMessage()


def test_long_prompts_are_truncated_with_one_warning(caplog):
    encoder = _encoder()
    with caplog.at_level(logging.WARNING, logger="framepack.text.vocab"):
        out = encoder.encode(["a red ball " * 10, "the blue ball " * 10])
    assert out.states.shape[1] == 12
    assert sum("truncated" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_save_load_round_trip_gives_identical_embeddings(tmp_path, layers):
    encoder = _encoder(layers=layers, seed=3)
    with torch.no_grad():  # move away from the initialisation, as training would
        for p in encoder.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
    folder = encoder.save(tmp_path / "ckpt")
    assert sorted(f.name for f in folder.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    assert folder == tmp_path / "ckpt" / "text_encoder"
    prompts = ["a red ball", "", "the blue square slides right"]
    for source in (tmp_path / "ckpt", folder):
        loaded = VocabEncoder.load(source).eval()
        assert loaded.config == encoder.config and loaded.vocab == encoder.vocab
        a, b = encoder.encode(prompts), loaded.encode(prompts)
        assert (
            torch.equal(a.states, b.states)
            and torch.equal(a.pooled, b.pooled)
            and torch.equal(a.mask, b.mask)
        )


def test_load_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no text encoder"):
        VocabEncoder.load(tmp_path)


def test_seed_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, b = _encoder(seed=7), _encoder(seed=7)
    assert torch.equal(torch.rand(1), expected)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    c = _encoder(seed=8)
    assert not torch.equal(a.token_embed.weight, c.token_embed.weight)


def test_trains_jointly_gradients_reach_embeddings():
    encoder = _encoder().train()
    out = encoder.encode(["a red ball", "blue square"])
    (out.states.square().sum() + out.pooled.square().sum()).backward()
    grad = encoder.token_embed.weight.grad
    assert grad is not None and grad[encoder.vocab.id("red")].abs().sum() > 0
    assert grad[0].abs().sum() == 0  # <pad> never contributes


@settings(max_examples=20, deadline=None)
@given(st.lists(st.text(alphabet="abc red ball,.!", max_size=30), min_size=1, max_size=4))
def test_every_row_has_a_valid_token(prompts):
    out = _encoder().encode(prompts)
    assert out.states.shape[0] == len(prompts)
    assert out.mask.any(dim=1).all()
    assert out.mask.sum(1).tolist() == [min(max(len(tokenize(p)), 1), 12) for p in prompts]
    assert torch.isfinite(out.states).all()


def test_prompt_embeds_validates_shapes():
    with pytest.raises(ValueError, match="mask"):
        PromptEmbeds(torch.zeros(2, 3, 4), torch.ones(2, 4, dtype=torch.bool), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="pooled"):
        PromptEmbeds(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), torch.zeros(3, 5))
    e = PromptEmbeds(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 5))
    half = e.to(dtype=torch.float16)
    assert half.states.dtype == torch.float16 and half.mask.dtype == torch.bool and half.batch_size == 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"width": 0}, "width"), ({"layers": 9}, "layers"), ({"width": 10, "heads": 3}, "heads")],
)
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        VocabEncoderConfig(**kwargs)


def test_unknown_words_of_a_long_timeline_are_one_log_line(caplog):
    from framepack.text.vocab import VocabEncoder, Vocabulary

    encoder = VocabEncoder(Vocabulary.build(["the camera pans left"]), seed=0)
    prompts = [f"the camera sees word{i} and thing{i}" for i in range(300)]
    with caplog.at_level("WARNING"):
        encoder.report_unknown(prompts)
        for prompt in prompts:
            encoder.encode([prompt])
    lines = [r for r in caplog.records if "vocabulary" in r.getMessage()]
    assert len(lines) == 1 and "(and 590 more)" in lines[0].getMessage()
