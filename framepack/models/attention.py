"""Attention back-ends: torch SDPA by default; flash / sage / xformers only on request.

All back-ends take and return the token-major layout `(B, S, H, D)`. A requested back-end that
cannot be imported is reported once with one logged line and replaced by SDPA; back-ends
without key-padding masks (flash, sage) also use SDPA for masked calls.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from functools import cache

import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

BACKENDS = ("sdpa", "flash", "sage", "xformers")

AttentionFn = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """q, k, v: (B, S, H, D); mask: (B, 1, 1 or S_q, S_k) bool (True = attend) or None -> (B, S, H, D)."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )
    return out.transpose(1, 2)


def _flash(module) -> AttentionFn:
    def run(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            return sdpa_attention(q, k, v, mask)
        return module.flash_attn_func(q, k, v)

    return run


def _sage(module) -> AttentionFn:
    def run(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            return sdpa_attention(q, k, v, mask)
        return module.sageattn(q, k, v, tensor_layout="NHD")

    return run


def _xformers(module) -> AttentionFn:
    def run(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        bias = None
        if mask is not None:
            # Additive bias (B, H, S_q, S_k); xformers wants it materialised per query row.
            bias = q.new_zeros(mask.shape).masked_fill(~mask, float("-inf"))
            bias = bias.expand(q.shape[0], q.shape[2], q.shape[1], k.shape[1])
        return module.memory_efficient_attention(q, k, v, attn_bias=bias)

    return run


_LOADERS = {
    "flash": ("flash_attn", _flash),
    "sage": ("sageattention", _sage),
    "xformers": ("xformers.ops", _xformers),
}


@cache
def get_attention(backend: str = "sdpa") -> AttentionFn:
    """The attention function for `backend`; SDPA (with one logged line) when it is unavailable."""
    if backend not in BACKENDS:
        raise ValueError(f"attention_backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "sdpa":
        return sdpa_attention
    module_name, wrap = _LOADERS[backend]
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or a broken CUDA extension raising at import
        logger.warning("attention backend %r unavailable (%s); using torch SDPA", backend, error)
        return sdpa_attention
    return wrap(module)
