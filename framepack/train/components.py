"""The trained modules of a run and how they are built from a `TrainConfig`.

`Denoiser` holds the packed transformer and the vocabulary prompt encoder as one `nn.Module`,
so one optimizer, one EMA and one DDP/FSDP wrapper cover both (the prompt encoder is trained
jointly, like the small model's text path in docs/text.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from framepack.codecs.base import Codec
from framepack.models import PRESETS as MODEL_PRESETS
from framepack.models import PackedTransformer, TransformerConfig
from framepack.models.blocks import AdaModulation
from framepack.packing import BASE_KERNEL, PackedContext, Schedule, parse_schedule
from framepack.sampling import x0_to_velocity
from framepack.text.vocab import VocabEncoder, VocabEncoderConfig, Vocabulary
from framepack.train.config import TrainConfig


class Denoiser(nn.Module):
    """Transformer + prompt encoder: (noisy section, sigma, prompt tokens, context) -> velocity."""

    def __init__(
        self, transformer: PackedTransformer, text_encoder: VocabEncoder, prediction: str = "velocity"
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.text_encoder = text_encoder
        self.prediction = prediction  # "velocity", or "x0" converted by x0_to_velocity

    def forward(
        self,
        noisy: Tensor,
        sigma: Tensor,
        token_ids: Tensor,
        token_mask: Tensor,
        latent_indices: Tensor,
        context: PackedContext,
    ) -> Tensor:
        """noisy (B, C, T, h, w), sigma (B,), token_ids/mask (B, L) -> velocity (B, C, T, h, w)."""
        states, pooled = self.text_encoder(token_ids, token_mask)  # (B, L, D_text), (B, D_pool)
        out = self.transformer(
            noisy, sigma * 1000.0, states, token_mask, pooled, latent_indices, context=context
        )
        return x0_to_velocity(noisy, out, sigma) if self.prediction == "x0" else out


def schedule_of(config: TrainConfig) -> Schedule:
    """The packing schedule named by `config.schedule` (a preset or 'name:key=value,...')."""
    return parse_schedule(config.schedule)


def schedule_kernels(schedule: Schedule) -> tuple[tuple[int, int, int], ...]:
    """Every kernel the schedule can produce (base kernel first, for the start-frame anchor)."""
    kernels = [BASE_KERNEL, *(lv.kernel for lv in schedule.levels)]
    if schedule.tail in ("grow", "pool"):
        kernels.append(schedule.resolved_tail_kernel)
    return tuple(dict.fromkeys(kernels))


def text_encoder_config(config: TrainConfig) -> VocabEncoderConfig:
    heads = 4 if config.text_dim % 4 == 0 else 1
    return VocabEncoderConfig(
        width=config.text_dim,
        pooled_width=config.text_dim,
        layers=1,
        heads=heads,
        max_length=config.text_max_tokens,
    )


def transformer_config(config: TrainConfig, codec: Codec) -> TransformerConfig:
    """The preset `config.model` with `config.model_overrides`, sized for the codec and text."""
    if config.model not in MODEL_PRESETS:
        raise ValueError(f"model must be one of {sorted(MODEL_PRESETS)}, got {config.model!r}")
    base = MODEL_PRESETS[config.model]
    return base.replace(
        **{
            "has_image_proj": False,
            "guidance_embeds": False,
            **config.model_overrides,
            "in_channels": codec.latent_channels,
            "out_channels": codec.latent_channels,
            "text_embed_dim": config.text_dim,
            "pooled_projection_dim": config.text_dim,
            "clean_kernels": schedule_kernels(schedule_of(config)),
        }
    )


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global RNG seeded, restoring the caller's RNG afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def zero_init(transformer: PackedTransformer) -> None:
    """DiT-style start: zero every adaLN modulation and the output layer, so each block starts as
    the identity and the first prediction is zero (stable early training from scratch)."""
    with torch.no_grad():
        for module in transformer.modules():
            if isinstance(module, AdaModulation):
                nn.init.zeros_(module.linear.weight)
                nn.init.zeros_(module.linear.bias)
        nn.init.zeros_(transformer.proj_out.weight)
        nn.init.zeros_(transformer.proj_out.bias)


def build_denoiser(config: TrainConfig, codec: Codec, vocab: Vocabulary) -> Denoiser:
    """A freshly initialised denoiser, its weights a function of `config.seed` only."""
    with seeded(config.seed):
        transformer = PackedTransformer(transformer_config(config, codec))
        zero_init(transformer)
        text_encoder = VocabEncoder(vocab, text_encoder_config(config))
    return Denoiser(transformer, text_encoder, config.prediction)
