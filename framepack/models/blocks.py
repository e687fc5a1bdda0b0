"""Building blocks of the HunyuanVideo transformer, named as in the released checkpoints.

Module attribute names (and the odd ModuleList indices such as `to_out.0`, `ff.net.2`) follow
diffusers' `HunyuanVideoFramepackTransformer3DModel` so the released state dict loads as is.
Read bottom-up: embedders, norms, attention layers, the token refiner, the two block kinds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framepack.models.attention import AttentionFn
from framepack.rope import apply_interleaved

Rope = tuple[Tensor, Tensor]  # `framepack.rope.interleave_tables` output: (B or 1, S, 1, D) each


# ----------------------------------------------------------------------------- embedders


def timestep_features(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features [cos | sin] of a (B,) float tensor -> (B, dim) float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class MLPEmbedder(nn.Module):
    """Linear -> SiLU -> Linear (diffusers `TimestepEmbedding` / `PixArtAlphaTextProjection`)."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class ConditionEmbedding(nn.Module):
    """temb = MLP(time features) + MLP(pooled text) [+ MLP(guidance features)]: (B, D)."""

    def __init__(self, dim: int, pooled_dim: int, guidance_embeds: bool) -> None:
        super().__init__()
        self.timestep_embedder = MLPEmbedder(256, dim)
        self.text_embedder = MLPEmbedder(pooled_dim, dim)
        self.guidance_embedder = MLPEmbedder(256, dim) if guidance_embeds else None

    def forward(self, timestep: Tensor, pooled: Tensor, guidance: Tensor | None = None) -> Tensor:
        temb = self.timestep_embedder(timestep_features(timestep).to(pooled.dtype))
        if self.guidance_embedder is not None:
            if guidance is None:
                raise ValueError("guidance is required: this model was trained with guidance_embeds=True")
            # The released sampler builds the guidance in the run's dtype: in bf16, 10 * 1000 -> 9984.
            guidance = guidance.to(pooled.dtype)
            temb = temb + self.guidance_embedder(timestep_features(guidance).to(pooled.dtype))
        return temb + self.text_embedder(pooled)  # released order (time + guidance) + text: same bf16 sums


class PatchEmbed(nn.Module):
    """Holds one Conv3d patchify projection, stored as diffusers' `x_embedder.proj`."""

    def __init__(self, in_channels: int, dim: int, kernel: tuple[int, int, int]) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: Tensor) -> Tensor:
        return patchify(x, self.proj)


def patchify(x: Tensor, conv: nn.Conv3d) -> Tensor:
    """Non-overlapping Conv3d as one matmul: (B, C, T, H, W) -> (B, T'*H'*W', D), (t,h,w) order.

    Sizes must be multiples of the kernel (pad first). Same result as `conv(x).flatten(2).mT`.
    """
    kt, kh, kw = conv.kernel_size
    b, c, t, h, w = x.shape
    patches = x.reshape(b, c, t // kt, kt, h // kh, kh, w // kw, kw).permute(0, 2, 4, 6, 1, 3, 5, 7)
    patches = patches.reshape(b, (t // kt) * (h // kh) * (w // kw), c * kt * kh * kw)
    return F.linear(patches, conv.weight.flatten(1), conv.bias)


class ImageProjection(nn.Module):
    """SigLIP features -> width D: Linear(d_img, 3D) -> SiLU -> Linear(3D, D)."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.up = nn.Linear(in_dim, 3 * dim)
        self.down = nn.Linear(3 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.up(x)))


# ----------------------------------------------------------------------------- norms


class RMSNorm(nn.Module):
    """RMS norm over the last axis (qk-norm per head), computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.to(self.weight.dtype) * self.weight


def layer_norm(x: Tensor) -> Tensor:
    """Affine-free LayerNorm (eps 1e-6) used before every modulation."""
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x: (B, S, D), shift/scale: (B, D) -> x * (1 + scale) + shift.

    A multiply then an add, as the released model: in bf16 a fused `addcmul` rounds once instead
    of twice and moves the output off the official's (see docs/hunyuan.md, Fidelity).
    """
    return x * (1 + scale[:, None]) + shift[:, None]


def gated(x: Tensor, y: Tensor, gate: Tensor) -> Tensor:
    """The gated residual x + y * gate: x, y (B, S, D), gate (B, D); multiply then add, as released."""
    return x + y * gate[:, None]


class AdaModulation(nn.Module):
    """SiLU -> Linear(D, n*D) -> n chunks of (B, D) (diffusers `AdaLayerNormZero*`'s `linear`)."""

    def __init__(self, dim: int, chunks: int) -> None:
        super().__init__()
        self.chunks = chunks
        self.linear = nn.Linear(dim, chunks * dim)

    def forward(self, temb: Tensor) -> tuple[Tensor, ...]:
        return self.linear(F.silu(temb)).chunk(self.chunks, dim=-1)


# ----------------------------------------------------------------------------- feed-forward


class _ProjIn(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, hidden)


class FeedForward(nn.Module):
    """Linear -> activation -> Linear; `net.0.proj` / `net.2` as in the checkpoints."""

    def __init__(self, dim: int, hidden: int, activation: str) -> None:
        super().__init__()
        self.activation = activation  # "gelu_tanh" or "silu"
        self.net = nn.ModuleList([_ProjIn(dim, hidden), nn.Identity(), nn.Linear(hidden, dim)])

    def forward(self, x: Tensor) -> Tensor:
        h = self.net[0].proj(x)
        h = F.gelu(h, approximate="tanh") if self.activation == "gelu_tanh" else F.silu(h)
        return self.net[2](h)


# ----------------------------------------------------------------------------- token refiner


class RefinerAttention(nn.Module):
    """Plain self-attention of the text refiner (no qk-norm, no RoPE)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x: Tensor, mask: Tensor | None, attend: AttentionFn) -> Tensor:
        q, k, v = (proj(x).unflatten(-1, (self.heads, -1)) for proj in (self.to_q, self.to_k, self.to_v))
        return self.to_out[0](attend(q, k, v, mask).flatten(2))


class RefinerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RefinerAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ff = FeedForward(dim, int(dim * mlp_ratio), "silu")
        self.norm_out = AdaModulation(dim, 2)

    def forward(self, x: Tensor, temb: Tensor, mask: Tensor | None, attend: AttentionFn) -> Tensor:
        gate_attn, gate_ff = self.norm_out(temb)
        x = x + self.attn(self.norm1(x), mask, attend) * gate_attn[:, None]
        return x + self.ff(self.norm2(x)) * gate_ff[:, None]


class _RefinerStack(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int, mlp_ratio: float) -> None:
        super().__init__()
        self.refiner_blocks = nn.ModuleList([RefinerBlock(dim, heads, mlp_ratio) for _ in range(layers)])


class TokenRefiner(nn.Module):
    """Refines LLaMA text states into width D, conditioned on time and the mean text state."""

    def __init__(self, text_dim: int, dim: int, heads: int, layers: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.time_text_embed = ConditionEmbedding(dim, text_dim, guidance_embeds=False)
        self.proj_in = nn.Linear(text_dim, dim)
        self.token_refiner = _RefinerStack(dim, heads, layers, mlp_ratio)

    def forward(self, text: Tensor, timestep: Tensor, mask: Tensor | None, attend: AttentionFn) -> Tensor:
        """text: (B, L, D_text), mask: (B, L) bool or None (all valid) -> (B, L, D)."""
        if mask is None:
            pooled = text.mean(dim=1)
        else:
            weights = mask.to(torch.float32)[..., None]
            pooled = ((text * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)).to(text.dtype)
        temb = self.time_text_embed(timestep, pooled)
        x = self.proj_in(text)
        pair_mask = None
        if mask is not None:
            # As the released code: valid tokens see valid tokens, padding sees only token 0
            # (always visible, so no row is empty): (B, 1, L, L).
            pair_mask = mask[:, None, :, None] & mask[:, None, None, :]
            pair_mask[..., 0] = True
        for block in self.token_refiner.refiner_blocks:
            x = block(x, temb, pair_mask, attend)
        return x


# ----------------------------------------------------------------------------- main blocks


class SingleAttention(nn.Module):
    """Single-stream attention projections (the output projection is shared with the MLP)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        head_dim = dim // heads
        self.heads = heads
        self.norm_q = RMSNorm(head_dim)
        self.norm_k = RMSNorm(head_dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)

    def qkv(self, x: Tensor, rope: Rope) -> tuple[Tensor, Tensor, Tensor]:
        """(B, S, D) -> q, k, v (B, S, H, Dh), q and k RMS-normed and rotated."""
        split = (self.heads, -1)
        q = apply_interleaved(self.norm_q(self.to_q(x).unflatten(-1, split)), *rope)
        k = apply_interleaved(self.norm_k(self.to_k(x).unflatten(-1, split)), *rope)
        return q, k, self.to_v(x).unflatten(-1, split)

    def forward(self, x: Tensor, mask: Tensor | None, rope: Rope, attend: AttentionFn) -> Tensor:
        """x: (B, S+L, D) joint tokens; rope covers all of them (identity on text) -> (B, S+L, D)."""
        return attend(*self.qkv(x, rope), mask).flatten(2)


class JointAttention(SingleAttention):
    """Dual-stream attention: separate projections for video and text, one joint softmax."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__(dim, heads)
        head_dim = dim // heads
        self.add_k_proj = nn.Linear(dim, dim)
        self.add_v_proj = nn.Linear(dim, dim)
        self.add_q_proj = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.to_add_out = nn.Linear(dim, dim)
        self.norm_added_q = RMSNorm(head_dim)
        self.norm_added_k = RMSNorm(head_dim)

    def forward(  # type: ignore[override]
        self, x: Tensor, text: Tensor, mask: Tensor | None, rope: Rope, attend: AttentionFn
    ) -> tuple[Tensor, Tensor]:
        """x: (B, S, D) video tokens, text: (B, L, D); rope covers the S video tokens."""
        split = (self.heads, -1)
        q, k, v = self.qkv(x, rope)  # (B, S, H, Dh)
        tq = self.norm_added_q(self.add_q_proj(text).unflatten(-1, split))  # (B, L, H, Dh)
        tk = self.norm_added_k(self.add_k_proj(text).unflatten(-1, split))
        tv = self.add_v_proj(text).unflatten(-1, split)
        out = attend(torch.cat([q, tq], 1), torch.cat([k, tk], 1), torch.cat([v, tv], 1), mask).flatten(2)
        n = x.shape[1]
        return self.to_out[0](out[:, :n]), self.to_add_out(out[:, n:])


class DualStreamBlock(nn.Module):
    """MMDiT block: video and text keep their own weights and meet in joint attention."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = AdaModulation(dim, 6)
        self.norm1_context = AdaModulation(dim, 6)
        self.attn = JointAttention(dim, heads)
        self.ff = FeedForward(dim, int(dim * mlp_ratio), "gelu_tanh")
        self.ff_context = FeedForward(dim, int(dim * mlp_ratio), "gelu_tanh")

    def forward(
        self, x: Tensor, text: Tensor, temb: Tensor, mask: Tensor | None, rope: Rope, attend: AttentionFn
    ) -> tuple[Tensor, Tensor]:
        shift, scale, gate, shift_ff, scale_ff, gate_ff = self.norm1(temb)  # each (B, D)
        c_shift, c_scale, c_gate, c_shift_ff, c_scale_ff, c_gate_ff = self.norm1_context(temb)
        attn, text_attn = self.attn(
            modulate(layer_norm(x), shift, scale),
            modulate(layer_norm(text), c_shift, c_scale),
            mask,
            rope,
            attend,
        )
        x = gated(x, attn, gate)
        text = gated(text, text_attn, c_gate)
        x = gated(x, self.ff(modulate(layer_norm(x), shift_ff, scale_ff)), gate_ff)
        text = gated(text, self.ff_context(modulate(layer_norm(text), c_shift_ff, c_scale_ff)), c_gate_ff)
        return x, text


class SingleStreamBlock(nn.Module):
    """Parallel attention + MLP on the joint [video | text] sequence."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        mlp_dim = int(dim * mlp_ratio)
        self.attn = SingleAttention(dim, heads)
        self.norm = AdaModulation(dim, 3)
        self.proj_mlp = nn.Linear(dim, mlp_dim)
        self.proj_out = nn.Linear(dim + mlp_dim, dim)

    def forward(
        self, x: Tensor, temb: Tensor, mask: Tensor | None, rope: Rope, attend: AttentionFn
    ) -> Tensor:
        shift, scale, gate = self.norm(temb)
        h = modulate(layer_norm(x), shift, scale)  # (B, S+L, D)
        mlp = F.gelu(self.proj_mlp(h), approximate="tanh")
        out = self.proj_out(torch.cat([self.attn(h, mask, rope, attend), mlp], dim=-1))
        return gated(x, out, gate)


class OutputNorm(nn.Module):
    """AdaLayerNorm-continuous: LayerNorm, then scale and shift from temb (scale first)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        scale, shift = self.linear(F.silu(temb).to(x.dtype)).chunk(2, dim=-1)
        return modulate(layer_norm(x), shift, scale)
