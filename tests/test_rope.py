"""3-D RoPE from explicit frame indices and its pooling for compressed levels."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from framepack.rope import apply_rope, pool_tables, rope_tables

AXES = (4, 6, 6)


def test_unpooled_tables_match_diffusers():
    diffusers = pytest.importorskip("diffusers.models.transformers.transformer_hunyuan_video_framepack")
    reference = diffusers.HunyuanVideoFramepackRotaryPosEmbed(2, 1, list(AXES), 256.0)
    indices = torch.tensor([0, 3, 4, 9])
    ref_cos, ref_sin = reference(indices, 6, 8, torch.device("cpu"))  # (S, D) pair-repeated
    cos, sin = rope_tables(indices[None], 3, 4, AXES, 256.0)
    torch.testing.assert_close(cos[0].repeat_interleave(2, dim=-1), ref_cos, rtol=0, atol=0)
    torch.testing.assert_close(sin[0].repeat_interleave(2, dim=-1), ref_sin, rtol=0, atol=0)


@settings(max_examples=30, deadline=None)
@given(
    frames=st.integers(1, 7),
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    window=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
    start=st.integers(0, 50),
)
def test_pooled_tables_equal_literal_3d_pooling(frames, height, width, window, start):
    """The per-axis fast path equals replicate-pad + avg_pool3d of the full tables (SPEC sec. 2)."""
    indices = (start + torch.arange(frames) * 2)[None]  # gapped frame times
    full_cos, full_sin = rope_tables(indices, height, width, AXES, 256.0)
    cos, sin = rope_tables(indices, height, width, AXES, 256.0, window)
    grid = (frames, height, width)
    torch.testing.assert_close(cos, pool_tables(full_cos, grid, window), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sin, pool_tables(full_sin, grid, window), rtol=1e-5, atol=1e-6)
    expected = [-(-n // w) for n, w in zip(grid, window)]
    assert cos.shape == (1, expected[0] * expected[1] * expected[2], sum(AXES) // 2)


def test_pooled_time_channel_is_mean_of_window():
    """A token covering frames 10 and 11 has the mean of their time rotations."""
    cos, _ = rope_tables(torch.tensor([[10, 11]]), 2, 2, AXES, 256.0, (2, 2, 2))
    one, _ = rope_tables(torch.tensor([[10, 11]]), 2, 2, AXES, 256.0)
    t_channels = slice(0, AXES[0] // 2)
    expected = (one[0, 0, t_channels] + one[0, 4, t_channels]) / 2  # token (t=0,...) and (t=1,...)
    torch.testing.assert_close(cos[0, 0, t_channels], expected)


def test_rows_may_differ():
    cos, _ = rope_tables(torch.tensor([[0, 1], [5, 9]]), 2, 2, AXES, 256.0)
    single, _ = rope_tables(torch.tensor([[5, 9]]), 2, 2, AXES, 256.0)
    torch.testing.assert_close(cos[1], single[0])
    assert not torch.allclose(cos[0], cos[1])


def test_apply_rope_matches_diffusers_and_is_relative():
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, 3, sum(AXES), generator=g)
    cos, sin = rope_tables(torch.tensor([[2, 7, 30]]), 2, 2, AXES, 256.0)
    full = (cos[0].repeat_interleave(2, -1), sin[0].repeat_interleave(2, -1))
    expected = embeddings.apply_rotary_emb(x, full, sequence_dim=1)
    torch.testing.assert_close(apply_rope(x, cos, sin), expected, rtol=1e-6, atol=1e-6)
    # Rotations keep norms, and q.k depends only on the position difference.
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))
    q, k = torch.randn(2, sum(AXES), generator=g)
    c1, s1 = rope_tables(torch.tensor([[3, 8]]), 1, 1, AXES, 256.0)
    c2, s2 = rope_tables(torch.tensor([[103, 108]]), 1, 1, AXES, 256.0)

    def score(c, s):
        rq = apply_rope(q[None, None, None], c[:, :1], s[:, :1])
        rk = apply_rope(k[None, None, None], c[:, 1:], s[:, 1:])
        return (rq * rk).sum()

    torch.testing.assert_close(score(c1, s1), score(c2, s2), rtol=1e-4, atol=1e-4)
