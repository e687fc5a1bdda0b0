"""Sequence parallelism: N processes share every forward of the packed transformer (Ulysses).

DeepSpeed-Ulysses (Jacobs et al. 2023, Sec. 3): each process keeps 1/N of the tokens through
every token-wise layer (modulation, projections, MLPs); around each attention an all-to-all
trades the split over tokens for a split over heads, so every process attends over all tokens
for H/N heads, and a second all-to-all trades back. The engine is yunchang's
`LongContextAttention` (Ulysses x ring, the one xDiT runs HunyuanVideo on), with ring degree 1.

Per process the sequence is `[video tokens r | text tokens r]`: the packed video tokens
(`[levels... | noisy]`) and the image + text tokens are each cut into N equal runs, the last
padded. yunchang's kernels take no mask, so padded keys (and, at batch > 1, text padding) are
removed exactly with one extra channel: queries carry 1 there, kept keys 0 and removed keys
`KEY_OFF`, whose score underflows to a weight of exactly 0 (`_with_key_channel`). Without padding
nor a text mask the channel is left out. The wrapper runs the transformer's own forward
(embeddings, output head) and takes over only its block calls: the first splits the sequence,
the last gathers it back (one all-gather per forward).

    model = SequenceParallel(PackedTransformer.from_pretrained(...))  # under torchrun
    velocity = model(latents, timestep, text_states, ...)  # same signature, same result

Each process holds all the weights (use `--low-vram` block streaming to hold fewer); attention
activations and compute divide by N. Heads must divide by N (the 13B model's 24: N in 2, 3, 4, 6,
8, 12, 24). Kernels: the math kernel on the CPU (where yunchang's flash paths do not run; used by
the gloo equality test), flash-attn when installed on CUDA, else torch's flash kernel (half
precision) or its memory-efficient kernel (float32).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.distributed as dist
from torch import Tensor, nn

from framepack.models.transformer import PackedTransformer

# The extra key channel of removed keys: finite in fp16 and bf16; scaled by 1/sqrt(head size <= 256),
# a score below -1800, whose softmax weight is exactly 0.
KEY_OFF = -3.0e4
CHANNEL_PAD = 8  # the extra channel padded to 8, the head-size multiple flash kernels want


def engine_attn_type(device: torch.device, dtype: torch.dtype):
    """yunchang's kernel for `device` and `dtype` (`yunchang.kernels.AttnType`)."""
    from yunchang.kernels import AttnType

    if device.type != "cuda":
        return AttnType.TORCH_MATH
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return AttnType.TORCH_FLASH if dtype in (torch.float16, torch.bfloat16) else AttnType.TORCH_EFFICIENT
    return AttnType.FA


class SequenceParallel(nn.Module):
    """`transformer`'s forward split over the processes of the default group (see module doc).

    Every process calls it with the same inputs and gets the whole output. The transformer's own
    forward runs (embeddings, output head); only its block calls (`PackedTransformer._run`, the
    block API TeaCache also patches) come here: the first one splits the sequence, the last one
    gathers it back.
    """

    def __init__(self, transformer: PackedTransformer, attn_type=None) -> None:
        super().__init__()
        try:
            from yunchang import LongContextAttention, set_seq_parallel_pg
            from yunchang.globals import PROCESS_GROUP
        except ImportError as error:
            raise ImportError(
                f"sequence parallelism needs yunchang: pip install 'framepack[parallel]' ({error})"
            ) from None
        if not dist.is_initialized():
            raise RuntimeError("SequenceParallel needs a process group (run under torchrun)")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        heads = transformer.config.num_attention_heads
        if heads % self.world:
            raise ValueError(f"{self.world} processes must divide the model's {heads} attention heads")
        if not len(transformer.transformer_blocks):
            raise ValueError("SequenceParallel needs a dual-stream block (the first one splits the sequence)")
        self.transformer = transformer
        blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
        self._index = {id(block): i for i, block in enumerate(blocks)}
        self._dual, self._last = len(transformer.transformer_blocks), len(blocks) - 1
        self._layout: _Layout | None = None
        transformer._run = self._run  # every block call of its forward comes here
        set_seq_parallel_pg(self.world, 1, self.rank, self.world)  # Ulysses degree N, ring degree 1
        self.group = PROCESS_GROUP.ULYSSES_PG
        if attn_type is None:
            weight = next(transformer.parameters())
            attn_type = engine_attn_type(weight.device, weight.dtype)
        self.attention = LongContextAttention(ring_impl_type="basic", attn_type=attn_type)

    @property
    def config(self):
        return self.transformer.config

    def forward(self, *args, **kwargs) -> Tensor:
        """`PackedTransformer.forward`'s arguments and result: (B, C_out, T, h, w)."""
        try:
            return self.transformer(*args, **kwargs)
        finally:
            self._layout = None

    def _run(self, block: nn.Module, *args):
        """One block on this process's tokens, with its key mask and RoPE tables.

        Dual-stream blocks get `(x, text, temb, mask, rope, attend)`, single-stream ones the
        joint `[x | text]` and `(temb, mask, rope, attend)`, as `PackedTransformer.forward`
        passes them; the mask and tables are replaced by this process's runs.
        """
        m = self.transformer
        index = self._index[id(block)]
        run = partial(type(m)._run, m, block)
        if index < self._dual:
            x, text, temb, mask, rope, _ = args
            if index == 0:
                self._layout = _Layout(x.shape[1], text.shape[1], mask, rope, self.rank, self.world)
                x, text = self._layout.video(x), self._layout.text(text)
            layout = self._layout
            x, text = run(x, text, temb, layout.keep, layout.video_rope, self._attend)
            if index == self._last:
                return layout.merge(self._gather(torch.cat([x, text], dim=1)), joint=False)
            return x, text
        x, temb, mask, rope, _ = args
        layout = self._layout
        x = run(x, temb, layout.keep, layout.joint(rope), self._attend)
        return layout.merge(self._gather(x), joint=True) if index == self._last else x

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, keep: Tensor | None) -> Tensor:
        """This process's q, k, v (B, s, H, D) attend to every process's keys -> (B, s, H, D).

        `keep` (B, s) bool marks the keys that count (None: all); the blocks pass it where the
        single-process model passes its key mask.
        """
        d = q.shape[-1]
        if keep is not None:
            q, k, v = _with_key_channel(q, k, v, keep)
        out = self.attention(q, k, v, softmax_scale=d**-0.5, causal=False)
        return out[..., :d]

    def _gather(self, x: Tensor) -> list[Tensor]:
        """(B, s, D) from every process, in rank order."""
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return parts


class _Layout:
    """How one forward's `[video S | image + text L]` sequence is split: each process holds
    `[video run r | text run r]`, runs of ceil(S/N) and ceil(L/N) tokens, the last padded."""

    def __init__(
        self,
        n_video: int,
        n_text: int,
        mask: Tensor | None,
        rope: tuple[Tensor, Tensor],
        rank: int,
        world: int,
    ) -> None:
        self.n_video, self.n_text = n_video, n_text
        self.shard = partial(_shard, rank=rank, world=world)
        self.size = -(-n_video // world)  # video tokens per process
        self.video_rope = (self.shard(rope[0]), self.shard(rope[1]))
        self._joint_rope: tuple[Tensor, Tensor] | None = None
        self.keep = None  # (B, S/N + L/N) bool: which of this process's tokens are keys
        if n_video % world or n_text % world or mask is not None:
            b = rope[0].shape[0] if mask is None else mask.shape[0]
            keep = (
                mask[:, 0, 0, :]
                if mask is not None
                else rope[0].new_ones(b, n_video + n_text, dtype=torch.bool)
            )
            self.keep = torch.cat(
                [self.video(keep, fill=False), self.text(keep, fill=False, offset=True)], dim=1
            )

    def video(self, x: Tensor, fill: float | bool = 0) -> Tensor:
        """This process's video run of (B, S, ...) or of the first S tokens of (B, S + L, ...)."""
        return self.shard(x[:, : self.n_video], fill=fill)

    def text(self, x: Tensor, fill: float | bool = 0, offset: bool = False) -> Tensor:
        """This process's text run of (B, L, ...), or of the last L tokens of (B, S + L, ...)."""
        return self.shard(x[:, self.n_video :] if offset else x, fill=fill)

    def joint(self, rope: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """This process's runs of the joint tables (B|1, S + L, 1, D), split once per forward."""
        if self._joint_rope is None:
            self._joint_rope = tuple(
                torch.cat([self.video(t), self.text(t, offset=True)], dim=1) for t in rope
            )
        return self._joint_rope

    def merge(self, parts: list[Tensor], *, joint: bool):
        """Every process's `[video run | text run]` -> `[video | text]` (joint) or `(video, text)`."""
        video = torch.cat([p[:, : self.size] for p in parts], dim=1)[:, : self.n_video]
        text = torch.cat([p[:, self.size :] for p in parts], dim=1)[:, : self.n_text]
        return torch.cat([video, text], dim=1) if joint else (video, text)


def _shard(x: Tensor, *, rank: int, world: int, fill: float | bool = 0) -> Tensor:
    """This process's run of axis 1: (B, S, ...) -> (B, ceil(S/N), ...), the last run padded."""
    size = -(-x.shape[1] // world)
    pad = size * world - x.shape[1]
    if pad:
        x = torch.cat([x, x.new_full((x.shape[0], pad, *x.shape[2:]), fill)], dim=1)
    return x[:, rank * size : (rank + 1) * size]


def _with_key_channel(q: Tensor, k: Tensor, v: Tensor, keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Append CHANNEL_PAD channels: q 1, k 0 (kept) or KEY_OFF (removed), v 0, then zeros.

    q.k gains q_extra * k_extra: 0 for a kept key, KEY_OFF for a removed one, whose weight then
    underflows to exactly 0. The extra channels travel through the all-to-all with their keys.
    """
    b, s, heads, _ = q.shape
    zeros = q.new_zeros(b, s, heads, CHANNEL_PAD)
    one = zeros.clone()
    one[..., 0] = 1.0
    off = torch.where(keep, 0.0, KEY_OFF).to(k.dtype)[:, :, None, None].expand(b, s, heads, 1)
    return (
        torch.cat([q, one], dim=-1),
        torch.cat([k, off, zeros[..., 1:]], dim=-1),
        torch.cat([v, zeros], dim=-1),
    )
