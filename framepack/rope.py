"""3-D rotary positions from explicit frame indices, pooled for compressed levels (Sec. 2).

Every token keeps its true time: the rotary angles of a token on the base grid are
`(t * f_t, h * f_h, w * f_w)` for the per-axis frequency sets of `axes_dim` (HunyuanVideo:
(16, 56, 56), theta 256), with `t` the explicit (possibly gapped) frame index. A compressed level
averages the cos and sin tables of the base grid over its window (edges replicate-padded to a
multiple of the window), so a compressed token sits at the mean position of what it covers.

Tables have shape `(B, S, D/2)`: one angle per channel *pair* (channels 2i and 2i+1 rotate
together), which is what `apply_rope` consumes. Because each channel depends on one axis only,
pooling over a (t, h, w) window factorises into per-axis pooling; `rope_tables` uses that, and
`pool_tables` is the literal 3-D pooling kept as the definition (the tests check they agree).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

Window = tuple[int, int, int]


def axis_frequencies(dim: int, theta: float, device: torch.device | None = None) -> Tensor:
    """(dim/2,) float32 angular frequencies `theta ** (-2i / dim)` of one rotary axis."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))


def _pad_to_multiple(positions: Tensor, window: int) -> Tensor:
    """Replicate the last position along the last axis up to a multiple of `window`."""
    remainder = (-positions.shape[-1]) % window
    if remainder == 0:
        return positions
    return torch.cat([positions, positions[..., -1:].expand(*positions.shape[:-1], remainder)], dim=-1)


def _pooled_axis(positions: Tensor, dim: int, theta: float, window: int) -> tuple[Tensor, Tensor]:
    """cos/sin of one axis averaged over consecutive windows.

    positions: (..., N) float32 -> cos, sin: (..., ceil(N / window), dim/2)
    """
    angles = _pad_to_multiple(positions, window)[..., None] * axis_frequencies(dim, theta, positions.device)
    cos, sin = angles.cos(), angles.sin()  # (..., N_pad, dim/2)
    if window > 1:
        cos = cos.unflatten(-2, (-1, window)).mean(-2)
        sin = sin.unflatten(-2, (-1, window)).mean(-2)
    return cos, sin


def rope_tables(
    frame_indices: Tensor,
    height: int,
    width: int,
    axes_dim: tuple[int, int, int],
    theta: float,
    window: Window = (1, 1, 1),
) -> tuple[Tensor, Tensor]:
    """Rotary cos/sin tables for a (T, height, width) base token grid pooled by `window`.

    frame_indices: (B, T) frame times (any real values; rows may differ).
    height, width: the base token grid (latent size / patch size).
    window:        pooling window on the base grid (level kernel / base patch), (1, 1, 1) = none.
    Returns cos, sin: (B, T' * H' * W', D/2) float32 with T' = ceil(T / wt) etc., tokens in
    (t, h, w) row-major order, channels `[t axis | h axis | w axis]`.
    """
    dt, dh, dw = axes_dim
    wt, wh, ww = window
    device = frame_indices.device
    batch = frame_indices.shape[0]
    t_cos, t_sin = _pooled_axis(frame_indices.float(), dt, theta, wt)  # (B, T', dt/2)
    h_cos, h_sin = _pooled_axis(torch.arange(height, dtype=torch.float32, device=device), dh, theta, wh)
    w_cos, w_sin = _pooled_axis(torch.arange(width, dtype=torch.float32, device=device), dw, theta, ww)
    nt, nh, nw = t_cos.shape[1], h_cos.shape[0], w_cos.shape[0]

    def grid(t: Tensor, h: Tensor, w: Tensor) -> Tensor:
        out = torch.empty(batch, nt, nh, nw, (dt + dh + dw) // 2, device=device)
        out[..., : dt // 2] = t[:, :, None, None]
        out[..., dt // 2 : (dt + dh) // 2] = h[None, None, :, None]
        out[..., (dt + dh) // 2 :] = w[None, None, None, :]
        return out.flatten(1, 3)

    return grid(t_cos, h_cos, w_cos), grid(t_sin, h_sin, w_sin)


def pool_tables(table: Tensor, grid: tuple[int, int, int], window: Window) -> Tensor:
    """Average-pool a rotary table over 3-D windows, replicate-padding the edges.

    The literal definition (as diffusers' `_pad_rotary_emb`): table (B, T*H*W, C) on the grid
    (T, H, W) -> (B, T'*H'*W', C).
    """
    x = table.transpose(1, 2).unflatten(2, grid)  # (B, C, T, H, W)
    pad = [(-size) % win for size, win in zip(grid, window)]
    x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")
    return F.avg_pool3d(x, window, stride=window).flatten(2).transpose(1, 2)


def interleave_tables(cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel tables for `apply_interleaved`, built once per forward.

    cos, sin: (B, S, D/2) -> (B, S, 1, D): cos repeated per pair, sin as (-sin, +sin) per pair.
    """
    cos2 = cos.repeat_interleave(2, dim=-1)
    sin2 = torch.stack((-sin, sin), dim=-1).flatten(-2)
    return cos2[:, :, None], sin2[:, :, None]


def apply_interleaved(x: Tensor, cos2: Tensor, sin2: Tensor) -> Tensor:
    """x: (B, S, H, D) rotated by `interleave_tables` output, in float32 -> x's dtype."""
    xf = x.float()
    swapped = xf.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (x1, x0) per pair
    return torch.addcmul(xf * cos2, swapped, sin2).to(x.dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (2i, 2i+1) of `x` by the table angles, computed in float32.

    x: (B, S, H, D); cos, sin: (B or 1, S, D/2) -> (B, S, H, D) in x's dtype.
    """
    return apply_interleaved(x, *interleave_tables(cos, sin))
