"""The packed transformer, its presets, and loading/saving the released formats."""

from framepack.models.config import PRESETS, TransformerConfig, projection_name
from framepack.models.transformer import PackedTransformer

__all__ = ["PRESETS", "PackedTransformer", "TransformerConfig", "projection_name"]
