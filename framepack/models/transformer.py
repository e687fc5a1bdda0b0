"""PackedTransformer: HunyuanVideo's dual/single-stream DiT with one projection per context level.

Token sequence (Sec. 2 of the paper; released order `[4x | 2x | 1x | noisy]`):

    [ level_0 tokens | level_1 tokens | ... | noisy tokens ] ++ [ image tokens | text tokens ]

Levels come from `PackedContext` in token order (coarsest first); each level is patchified with
its own kernel (`clean_x_embedder.proj*`), its RoPE tables are the base-grid tables pooled over
the kernel window at the true frame indices. Only the noisy tokens reach the output projection.
Parameter names equal diffusers' `HunyuanVideoFramepackTransformer3DModel` (see `blocks.py`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from framepack.models.attention import get_attention
from framepack.models.blocks import (
    ConditionEmbedding,
    DualStreamBlock,
    ImageProjection,
    OutputNorm,
    PatchEmbed,
    SingleStreamBlock,
    TokenRefiner,
    patchify,
)
from framepack.models.config import Kernel, TransformerConfig, projection_name
from framepack.models.io import load_config, load_pretrained, save_pretrained
from framepack.packing import PackedContext
from framepack.rope import interleave_tables, rope_tables


def pad_to_kernel(x: Tensor, kernel: Kernel) -> Tensor:
    """Replicate-pad (B, C, T, H, W) at the end of each axis up to a multiple of `kernel`."""
    pads = [(-size) % k for size, k in zip(x.shape[2:], kernel)]
    if not any(pads):
        return x
    return F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate")


class HistoryPatchEmbed(nn.Module):
    """One Conv3d patchify projection per context-level kernel (`proj`, `proj_2x`, `proj_4x`, ...)."""

    def __init__(self, in_channels: int, dim: int, kernels: tuple[Kernel, ...]) -> None:
        super().__init__()
        self.in_channels, self.dim = in_channels, dim
        self.names: dict[Kernel, str] = {}
        for kernel in kernels:
            self._add(kernel)

    def _add(self, kernel: Kernel) -> nn.Conv3d:
        conv = nn.Conv3d(self.in_channels, self.dim, kernel_size=kernel, stride=kernel)
        self.add_module(projection_name(kernel), conv)
        self.names[kernel] = projection_name(kernel)
        return conv

    def projection(self, kernel: Kernel) -> nn.Conv3d:
        name = self.names.get(tuple(kernel))
        if name is None:
            raise ValueError(
                f"context level kernel {tuple(kernel)} has no projection; this model has {list(self.names)} "
                "(add one with PackedTransformer.add_clean_level)"
            )
        return getattr(self, name)

    def forward(self, latents: Tensor, kernel: Kernel) -> Tensor:
        """(B, C, T, H, W) -> (B, ceil(T/kt) * ceil(H/kh) * ceil(W/kw), D), edges replicate-padded."""
        return patchify(pad_to_kernel(latents, kernel), self.projection(kernel))


class PackedTransformer(nn.Module):
    """The FramePack transformer. See module docstring and docs/transformer.md."""

    def __init__(self, config: TransformerConfig, attention_backend: str = "sdpa") -> None:
        super().__init__()
        self.config = config
        dim, heads = config.inner_dim, config.num_attention_heads
        self.x_embedder = PatchEmbed(config.in_channels, dim, config.base_kernel)
        self.clean_x_embedder = (
            HistoryPatchEmbed(config.in_channels, dim, config.clean_kernels)
            if config.has_clean_x_embedder
            else None
        )
        # The released refiner's MLP ratio is fixed at 4 (diffusers ignores `mlp_ratio` here).
        self.context_embedder = TokenRefiner(config.text_embed_dim, dim, heads, config.num_refiner_layers)
        self.image_projection = ImageProjection(config.image_proj_dim, dim) if config.has_image_proj else None
        self.time_text_embed = ConditionEmbedding(dim, config.pooled_projection_dim, config.guidance_embeds)
        self.transformer_blocks = nn.ModuleList(
            [DualStreamBlock(dim, heads, config.mlp_ratio) for _ in range(config.num_layers)]
        )
        self.single_transformer_blocks = nn.ModuleList(
            [SingleStreamBlock(dim, heads, config.mlp_ratio) for _ in range(config.num_single_layers)]
        )
        self.norm_out = OutputNorm(dim)
        p = config.patch_size
        self.proj_out = nn.Linear(dim, config.patch_size_t * p * p * config.out_channels)
        self.proj_out_mlp = self._output_mlp(config.head_hidden) if config.head_hidden else None
        self.gradient_checkpointing = False
        self.set_attention_backend(attention_backend)

    # ------------------------------------------------------------------ switches

    def set_attention_backend(self, backend: str) -> None:
        """ "sdpa" (default), "flash", "sage" or "xformers"; unavailable ones fall back to SDPA."""
        self.attention_backend = backend
        self._attend = get_attention(backend)

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in backward (training memory ~ one block)."""
        self.gradient_checkpointing = enabled

    def add_clean_level(self, kernel: Kernel, init_from: Kernel | None = None) -> None:
        """Add a context level with patchify `kernel`, initialised from an existing projection.

        The source kernel is upsampled by nearest neighbour and divided by the volume ratio, the
        bias copied (Sec. 2; released: proj_2x = repeat(proj, 2,2,2) / 8), so the new level maps
        a nearest-upsampled video exactly as the source maps the original: it starts as a
        smooth average of the trained embedding. `init_from` defaults to the
        largest existing kernel that divides `kernel`.
        """
        if self.clean_x_embedder is None:
            raise ValueError("add_clean_level needs has_clean_x_embedder=True")
        kernel = tuple(int(s) for s in kernel)
        if kernel in self.clean_x_embedder.names:
            raise ValueError(f"kernel {kernel} already has a projection")
        divisors = [k for k in self.clean_x_embedder.names if all(n % s == 0 for n, s in zip(kernel, k))]
        if init_from is None:
            if not divisors:
                raise ValueError(f"no existing kernel divides {kernel}; pass init_from explicitly")
            init_from = max(divisors, key=lambda k: k[0] * k[1] * k[2])
        init_from = tuple(init_from)
        if init_from not in divisors:
            raise ValueError(f"init_from kernel {init_from} must exist and divide {kernel}")
        new_config = self.config.replace(clean_kernels=(*self.config.clean_kernels, kernel))
        source = self.clean_x_embedder.projection(init_from)
        factors = [n // s for n, s in zip(kernel, init_from)]
        weight = source.weight.detach()
        for axis, factor in zip((2, 3, 4), factors):
            weight = weight.repeat_interleave(factor, dim=axis)
        conv = self.clean_x_embedder._add(kernel).to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(weight / (factors[0] * factors[1] * factors[2]))
            conv.bias.copy_(source.bias)
        self.config = new_config

    def _output_mlp(self, hidden: int) -> nn.Sequential:
        """Per-token MLP [hidden state D | noisy input token p*p*C] -> hidden -> p*p*C beside
        `proj_out`; its last layer starts at zero."""
        dim, out = self.proj_out.in_features, self.proj_out.out_features
        mlp = nn.Sequential(nn.Linear(dim + out, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, out))
        nn.init.zeros_(mlp[2].weight)
        nn.init.zeros_(mlp[2].bias)
        return mlp.to(device=self.proj_out.weight.device, dtype=self.proj_out.weight.dtype)

    def add_output_mlp(self, hidden: int) -> None:
        """Add a per-token MLP head of width `hidden` beside the linear `proj_out`.

        A linear head maps each token's D hidden values to its p*p*C outputs, so every output
        token lies in a D-dimensional subspace, and the noisy input reaches the head only through
        the D-wide input projection. The MLP reads the hidden state and the token's own noisy
        input (a skip connection at full width), so its output can leave that subspace. Its last
        layer starts at zero: the model computes exactly what it did before.
        """
        if self.proj_out_mlp is not None:
            raise ValueError(f"the model already has an output MLP (width {self.config.head_hidden})")
        if hidden < 1:
            raise ValueError(f"output MLP width must be >= 1, got {hidden}")
        self.proj_out_mlp = self._output_mlp(hidden)
        self.config = self.config.replace(head_hidden=hidden)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        latents: Tensor,
        timestep: Tensor,
        text_states: Tensor,
        text_mask: Tensor,
        pooled_text: Tensor,
        latent_indices: Tensor,
        context: PackedContext | None = None,
        image_embeds: Tensor | None = None,
        guidance: Tensor | None = None,
    ) -> Tensor:
        """Predict the flow-matching velocity of the noisy section.

        latents: (B, C, T, h, w) noisy section; timestep: (B,) sigma * 1000;
        text_states: (B, L, D_text); text_mask: (B, L) bool (True = valid); pooled_text: (B, D_pool);
        latent_indices: (B, T) frame times; context: clean levels in token order;
        image_embeds: (B, N, D_img) placed before the text; guidance: (B,) distilled guidance * 1000.
        Returns (B, C_out, T, h, w).
        """
        b, _, t, h, w = latents.shape
        p = self.config.patch_size
        x, cos, sin, n_noisy = self.embed_video(latents, latent_indices, context)  # (B, S, D), (B|1, S, D/2)
        timestep = timestep.expand(b) if timestep.ndim == 0 else timestep
        if guidance is not None and guidance.ndim == 0:
            guidance = guidance.expand(b)
        temb = self.time_text_embed(timestep, pooled_text, guidance)  # (B, D)
        text, cond_mask = self._embed_conditions(text_states, text_mask, timestep, image_embeds)  # (B, L, D)
        n_video, n_text = x.shape[1], text.shape[1]
        mask = None
        if cond_mask is not None:  # (B, 1, 1, S + L) key-padding mask
            mask = torch.cat([cond_mask.new_ones(b, n_video), cond_mask], dim=1)[:, None, None, :]
        # RoPE on video tokens only; text rotates by the identity in the joint single-stream sequence.
        joint_cos = torch.cat([cos, cos.new_ones(cos.shape[0], n_text, cos.shape[2])], dim=1)
        joint_sin = torch.cat([sin, sin.new_zeros(sin.shape[0], n_text, sin.shape[2])], dim=1)
        video_rope, joint_rope = interleave_tables(cos, sin), interleave_tables(joint_cos, joint_sin)

        for block in self.transformer_blocks:
            x, text = self._run(block, x, text, temb, mask, video_rope, self._attend)
        x = torch.cat([x, text], dim=1)  # (B, S + L, D)
        for block in self.single_transformer_blocks:
            x = self._run(block, x, temb, mask, joint_rope, self._attend)

        x = x[:, n_video - n_noisy : n_video]  # (B, T*h'*w', D) noisy tokens only
        x = self.norm_out(x, temb)  # (B, T*h'*w', D) in the model's dtype
        # The output projection runs in float32 whatever the model's dtype, as the released demo
        # (`high_quality_fp32_output_for_inference`): the velocity is not rounded to bf16.
        weight, bias = self.proj_out.weight.float(), self.proj_out.bias.float()
        out = F.linear(x.float(), weight, bias)  # (B, T*h'*w', p*p*C) float32
        if self.proj_out_mlp is not None:  # (B, T*h'*w', D + p*p*C) -> (B, T*h'*w', p*p*C)
            out = out + self.proj_out_mlp(torch.cat([x, self._tokens(latents).to(x.dtype)], dim=-1))
        x = out
        x = x.reshape(b, t, h // p, w // p, -1, 1, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return x.reshape(b, -1, t, h, w)

    def _tokens(self, latents: Tensor) -> Tensor:
        """(B, C, T, h, w) -> (B, T*h'*w', C*p*p), the inverse of the output's unpatchify."""
        b, c, t, h, w = latents.shape
        p = self.config.patch_size
        x = latents.reshape(b, c, t, h // p, p, w // p, p).permute(0, 2, 3, 5, 1, 4, 6)
        return x.reshape(b, t * (h // p) * (w // p), c * p * p)

    def _run(self, block: nn.Module, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def embed_video(
        self, latents: Tensor, latent_indices: Tensor, context: PackedContext | None
    ) -> tuple[Tensor, Tensor, Tensor, int]:
        """Tokens and RoPE tables of `[levels... | noisy]`.

        Returns tokens (B, S, D), cos and sin (B or 1, S, D/2) (1 when every row has the same
        frame indices), and the number of noisy tokens (the last ones).
        """
        cfg = self.config
        p = cfg.patch_size
        b, c, _, h, w = latents.shape
        if h % p or w % p:
            raise ValueError(f"latents height and width must be multiples of patch_size={p}, got {h}x{w}")
        levels = [lv for lv in (context.levels if context is not None else ()) if lv.num_frames > 0]
        if levels and self.clean_x_embedder is None:
            raise ValueError(
                "this model has no clean_x_embedder (has_clean_x_embedder=False); pass context=None"
            )
        for lv in levels:
            lh, lw = lv.latents.shape[3:]
            if lv.latents.shape[:2] != (b, c) or lh % p or lw % p:
                raise ValueError(
                    f"context level {lv.kernel}: latents {tuple(lv.latents.shape)} must be (B={b}, C={c}, T, H, W) "
                    f"with H, W multiples of {p}"
                )
            if lv.indices.shape != (b, lv.num_frames):
                raise ValueError(
                    f"context level {lv.kernel}: indices {tuple(lv.indices.shape)} must be (B={b}, T={lv.num_frames})"
                )
        all_indices = [lv.indices for lv in levels] + [latent_indices]
        shared = b == 1 or all(bool((ix == ix[:1]).all()) for ix in all_indices)

        def tables(indices: Tensor, height: int, width: int, window: Kernel) -> tuple[Tensor, Tensor]:
            rows = indices[:1] if shared else indices
            return rope_tables(
                rows.to(latents.device), height, width, cfg.rope_axes_dim, cfg.rope_theta, window
            )

        tokens, cos, sin = [], [], []
        for lv in levels:
            kernel = tuple(lv.kernel)
            tokens.append(self.clean_x_embedder(lv.latents, kernel))
            window = (kernel[0], kernel[1] // p, kernel[2] // p)
            lc, ls = tables(lv.indices, lv.latents.shape[3] // p, lv.latents.shape[4] // p, window)
            cos.append(lc)
            sin.append(ls)
        noisy = self.x_embedder(latents)  # (B, T*h'*w', D)
        nc, ns = tables(latent_indices, h // p, w // p, (1, 1, 1))
        tokens.append(noisy)
        cos.append(nc)
        sin.append(ns)
        if len(tokens) == 1:
            return noisy, nc, ns, noisy.shape[1]
        return torch.cat(tokens, dim=1), torch.cat(cos, dim=1), torch.cat(sin, dim=1), noisy.shape[1]

    def _embed_conditions(
        self, text_states: Tensor, text_mask: Tensor, timestep: Tensor, image_embeds: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Refined text with image tokens in front: (B, N + L', D) and its key mask (or None).

        As the released code: the token refiner runs on the whole padded sequence with its mask,
        and the padding is cropped afterwards (to the valid tokens at batch size 1, where no mask
        is needed; to the longest valid prefix over the batch otherwise, exact since the padding
        after it is never attended). Cropping before refining is the same in exact arithmetic but
        rounds differently in bf16 (docs/hunyuan.md, Fidelity).
        """
        mask = text_mask.to(device=text_states.device, dtype=torch.bool)
        padded = not bool(mask.all())
        text = self.context_embedder(
            text_states, timestep, mask if padded else None, self._attend
        )  # (B, L, D)
        if mask.shape[0] == 1 and padded:
            text, mask = text[:, mask[0]], mask[:, mask[0]]
        elif padded:
            positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
            valid_length = max(int((mask * positions).amax()), 1)
            text, mask = text[:, :valid_length], mask[:, :valid_length]
        cond_mask = None if bool(mask.all()) else mask
        if image_embeds is None:
            return text, cond_mask
        if self.image_projection is None:
            raise ValueError(
                "image_embeds given but this model has no image projection (has_image_proj=False)"
            )
        image = self.image_projection(image_embeds.to(text.dtype))  # (B, N, D)
        if cond_mask is not None:
            cond_mask = torch.cat([cond_mask.new_ones(image.shape[:2]), cond_mask], dim=1)
        return torch.cat([image, text], dim=1), cond_mask

    # ------------------------------------------------------------------ io

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        attention_backend: str = "sdpa",
    ) -> PackedTransformer:
        """Load a diffusers-format directory (config.json + safetensors, sharded or not)."""
        with torch.device("meta"):
            model = cls(load_config(directory), attention_backend=attention_backend)
        return load_pretrained(model, directory, dtype=dtype, device=device)

    def save_pretrained(self, directory: str | os.PathLike | Path, max_shard_size: int | str = "5GB") -> None:
        """Write config.json and safetensors weights in the diffusers layout."""
        save_pretrained(self, directory, max_shard_size=max_shard_size)
