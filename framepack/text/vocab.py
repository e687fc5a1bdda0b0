"""The small model's prompt encoder: a caption vocabulary and a tiny learned transformer.

The released model reads prompts with LLaMA (per-token states) and CLIP-L (a pooled vector). The
small demo model keeps the same two outputs with a few thousand parameters that are trained jointly
with the transformer: a word vocabulary built from the training captions, token and positional
embeddings, 0-2 pre-norm transformer encoder layers, and a pooled vector (the mean over valid
tokens, projected to `pooled_width`).

Tokens: lowercase words and single punctuation marks (`"A red ball, left."` ->
`a red ball , left .`). Special tokens: `<pad>` (0, padding, masked out), `<unk>` (1, words not in
the vocabulary; each one is logged once per encoder), `<empty>` (2, the single valid token of an
empty prompt, so attention over the text is always defined).

Saved with a checkpoint as `text_encoder/{vocab.json, config.json, model.safetensors}`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from framepack.errors import UserError
from framepack.text.base import PromptEmbeds

logger = logging.getLogger(__name__)

PAD, UNK, EMPTY = "<pad>", "<unk>", "<empty>"
SPECIAL_TOKENS = (PAD, UNK, EMPTY)
SUBDIR = "text_encoder"
VOCAB_FORMAT = "framepack-vocab"

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lowercase words and single punctuation marks, in order."""
    return _TOKEN.findall(text.lower())


class Vocabulary:
    """Token strings <-> ids; ids 0, 1, 2 are `<pad>`, `<unk>`, `<empty>`."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens = list(tokens)
        if tuple(self.tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(
                f"Vocabulary tokens must start with {list(SPECIAL_TOKENS)}, got {self.tokens[:3]}"
            )
        self._ids = {token: i for i, token in enumerate(self.tokens)}
        if len(self._ids) != len(self.tokens):
            raise ValueError("Vocabulary tokens must be unique")

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1, max_size: int | None = None) -> Vocabulary:
        """Words of `captions` seen at least `min_count` times, most frequent first (ties by spelling)."""
        counts = Counter(token for caption in captions for token in tokenize(caption))
        words = sorted((w for w, n in counts.items() if n >= min_count and w not in SPECIAL_TOKENS),
                       key=lambda w: (-counts[w], w))  # fmt: skip
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIAL_TOKENS))]
        return cls([*SPECIAL_TOKENS, *words])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def id(self, token: str) -> int:
        """The id of `token`, or the `<unk>` id."""
        return self._ids.get(token, 1)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(
            json.dumps({"format": VOCAB_FORMAT, "version": 1, "tokens": self.tokens}, indent=0)
        )

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        data = json.loads(Path(path).read_text())
        if data.get("format") != VOCAB_FORMAT:
            raise UserError(
                f"{path} is not a framepack vocabulary (format {data.get('format')!r}); pass a checkpoint"
            )
        return cls(data["tokens"])


@dataclass(frozen=True)
class VocabEncoderConfig:
    """Sizes of the vocabulary prompt encoder.

    width:        D, the width of the per-token states.
    pooled_width: D_pool, the width of the pooled vector.
    layers:       transformer encoder layers (0 = embeddings only).
    heads:        attention heads per layer (must divide width).
    max_length:   L_max, longer prompts are truncated (with a warning).
    """

    width: int = 64
    pooled_width: int = 64
    layers: int = 1
    heads: int = 4
    max_length: int = 64

    def __post_init__(self) -> None:
        for name in ("width", "pooled_width", "heads", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"VocabEncoderConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.layers not in (0, 1, 2, 3, 4):
            raise ValueError(f"VocabEncoderConfig.layers must be in 0..4, got {self.layers}")
        if self.width % self.heads:
            raise ValueError(f"VocabEncoderConfig.heads must divide width {self.width}, got {self.heads}")


class VocabEncoder(nn.Module):
    """Word-vocabulary prompt encoder; implements `PromptEncoder` and trains with the transformer."""

    def __init__(
        self, vocab: Vocabulary, config: VocabEncoderConfig | None = None, seed: int | None = None
    ) -> None:
        """`seed` makes the initial weights reproducible without touching the global RNG."""
        super().__init__()
        self.vocab = vocab
        self.config = config = config or VocabEncoderConfig()
        # A seed initialises the weights in a forked RNG, leaving the global RNG untouched.
        with torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext():
            if seed is not None:
                torch.manual_seed(seed)
            self.token_embed = nn.Embedding(len(vocab), config.width, padding_idx=0)
            self.pos_embed = nn.Embedding(config.max_length, config.width)
            # Unit-variance word embeddings: words start well apart, so "left" and "right" give
            # the transformer different conditioning from the first step. (With std 0.02 and the
            # encoder's LayerNorms, direction words stayed within 0.005 of each other in the
            # pooled vector after 16,000 samples and the model never learned which way to pan.)
            nn.init.normal_(self.token_embed.weight, std=1.0)
            nn.init.normal_(self.pos_embed.weight, std=0.02)
            with torch.no_grad():
                self.token_embed.weight[0].zero_()
            layer = nn.TransformerEncoderLayer(
                config.width, config.heads, 4 * config.width, dropout=0.0,
                activation="gelu", batch_first=True, norm_first=True,
            )  # fmt: skip
            self.layers = (
                nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
                if config.layers
                else None
            )
            self.norm = nn.LayerNorm(config.width)
            self.pool = nn.Linear(config.width, config.pooled_width)
        self._reported: set[str] = set()  # unknown words already logged by this instance
        self._warned_truncation = False

    @classmethod
    def from_captions(
        cls, captions: Iterable[str], config: VocabEncoderConfig | None = None, seed: int | None = None
    ) -> VocabEncoder:
        """Build the vocabulary from training captions and a freshly initialised encoder."""
        return cls(Vocabulary.build(captions), config, seed)

    # -- encoding ----------------------------------------------------------------------------------

    def tokenize_batch(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """Token ids (B, L) int64 and mask (B, L) bool, padded to the longest prompt (<= max_length)."""
        tokens = [tokenize(prompt) for prompt in prompts]
        self.report_unknown(prompts)
        rows = [self._ids(row) for row in tokens]
        length = max((len(r) for r in rows), default=1)
        ids = torch.zeros(len(rows), length, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask = torch.arange(length).unsqueeze(0) < torch.tensor([len(r) for r in rows]).unsqueeze(1)
        return ids, mask

    def report_unknown(self, prompts: list[str]) -> None:
        """One log line for the words of `prompts` not yet reported as unknown (12 named at most)."""
        tokens = [t for prompt in prompts for t in tokenize(prompt)]
        unknown = [t for t in dict.fromkeys(tokens) if t not in self.vocab and t not in self._reported]
        if unknown:
            self._reported.update(unknown)
            more = f" (and {len(unknown) - 12} more)" if len(unknown) > 12 else ""
            logger.warning(
                "words not in the text encoder's vocabulary, encoded as %s: %s%s",
                UNK, ", ".join(unknown[:12]), more,
            )  # fmt: skip

    def _ids(self, tokens: list[str]) -> list[int]:
        if len(tokens) > self.config.max_length:
            if not self._warned_truncation:
                logger.warning("prompt longer than %d tokens truncated (max_length)", self.config.max_length)
                self._warned_truncation = True
            tokens = tokens[: self.config.max_length]
        return [self.vocab.id(t) for t in tokens] or [self.vocab.id(EMPTY)]

    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """ids (B, L) int64, mask (B, L) bool -> states (B, L, D) (zero at padding), pooled (B, D_pool)."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.token_embed(ids) + self.pos_embed(positions)  # (B, L, D)
        if self.layers is not None:
            x = self.layers(x, src_key_padding_mask=~mask)  # (B, L, D)
        x = self.norm(x) * mask.unsqueeze(-1)  # (B, L, D)
        mean = x.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)  # (B, D), mean over valid tokens
        return x, self.pool(mean)  # (B, L, D), (B, D_pool)

    def encode(self, prompts: list[str]) -> PromptEmbeds:
        """Encode a batch of prompts (gradients flow when the module is training)."""
        ids, mask = self.tokenize_batch(prompts)
        device = self.token_embed.weight.device
        ids, mask = ids.to(device), mask.to(device)
        states, pooled = self(ids, mask)
        return PromptEmbeds(states, mask, pooled)

    # -- checkpoints -------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write `directory/text_encoder/{vocab.json, config.json, model.safetensors}`; returns that folder."""
        out = Path(directory) / SUBDIR
        out.mkdir(parents=True, exist_ok=True)
        self.vocab.save(out / "vocab.json")
        config = {"kind": "vocab", "vocab_size": len(self.vocab), **asdict(self.config)}
        (out / "config.json").write_text(json.dumps(config, indent=2))
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / "model.safetensors"))
        return out

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str | None = None) -> VocabEncoder:
        """Load what `save` wrote; `directory` is the checkpoint folder or its `text_encoder` folder."""
        folder = Path(directory)
        if not (folder / "config.json").is_file() or (folder / SUBDIR).is_dir():
            folder = folder / SUBDIR
        missing = [
            n for n in ("vocab.json", "config.json", "model.safetensors") if not (folder / n).is_file()
        ]
        if missing:
            raise UserError(
                f"no text encoder in {directory} (missing {', '.join(missing)}); pass a checkpoint folder"
            )
        config = json.loads((folder / "config.json").read_text())
        fields = {k: config[k] for k in VocabEncoderConfig.__dataclass_fields__ if k in config}
        encoder = cls(Vocabulary.load(folder / "vocab.json"), VocabEncoderConfig(**fields))
        encoder.load_state_dict(load_file(str(folder / "model.safetensors")))
        return encoder.to(device) if device is not None else encoder
