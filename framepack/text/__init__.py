"""Prompt encoders: the `PromptEncoder` protocol and the small model's vocabulary encoder.

See docs/text.md.
"""

from framepack.text.base import PromptEmbeds, PromptEncoder
from framepack.text.vocab import VocabEncoder, VocabEncoderConfig, Vocabulary, tokenize

__all__ = ["PromptEmbeds", "PromptEncoder", "VocabEncoder", "VocabEncoderConfig", "Vocabulary", "tokenize"]
