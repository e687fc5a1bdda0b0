"""TransformerConfig: the packed HunyuanVideo transformer's hyper-parameters and presets.

Field names and defaults follow diffusers' `HunyuanVideoFramepackTransformer3DModel` config so a
released `config.json` maps onto this dataclass one to one. `clean_kernels` is ours: the
patchify kernel of every context level (Sec. 2: one projection per compression level).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from framepack.kernels import Kernel

DEFAULT_CLEAN_KERNELS: tuple[Kernel, ...] = ((1, 2, 2), (2, 4, 4), (4, 8, 8))
QK_NORMS = ("rms_norm",)


def projection_name(kernel: Kernel) -> str:
    """Parameter name of a level's patchify projection inside `clean_x_embedder`.

    (1,2,2) -> "proj", (k,2k,2k) -> "proj_{k}x" (the released "proj_2x", "proj_4x"),
    any other kernel -> "proj_{t}_{h}_{w}".
    """
    t, h, w = kernel
    if kernel == (1, 2, 2):
        return "proj"
    if h == w == 2 * t:
        return f"proj_{t}x"
    return f"proj_{t}_{h}_{w}"


@dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of the packed transformer (released values by default)."""

    in_channels: int = 16
    out_channels: int = 16
    num_attention_heads: int = 24
    attention_head_dim: int = 128
    num_layers: int = 20  # dual-stream blocks
    num_single_layers: int = 40  # single-stream blocks
    num_refiner_layers: int = 2
    mlp_ratio: float = 4.0
    patch_size: int = 2
    patch_size_t: int = 1
    qk_norm: str = "rms_norm"
    guidance_embeds: bool = True
    text_embed_dim: int = 4096
    pooled_projection_dim: int = 768
    rope_theta: float = 256.0
    rope_axes_dim: tuple[int, int, int] = (16, 56, 56)
    image_condition_type: str | None = None
    has_image_proj: bool = True
    image_proj_dim: int = 1152
    has_clean_x_embedder: bool = True
    clean_kernels: tuple[Kernel, ...] = DEFAULT_CLEAN_KERNELS
    # Ours: width of a per-token MLP added to the linear output projection (0 = the released
    # linear head). A linear head from D to p*p*C values confines each token's output to a
    # D-dimensional subspace; the small demo's pixel tokens need more (docs/training.md).
    head_hidden: int = 0

    def __post_init__(self) -> None:
        # Normalise JSON lists to tuples so configs compare and hash by value.
        object.__setattr__(self, "rope_axes_dim", tuple(int(a) for a in self.rope_axes_dim))
        object.__setattr__(self, "clean_kernels", tuple(tuple(int(s) for s in k) for k in self.clean_kernels))
        for name in (
            "in_channels",
            "out_channels",
            "num_attention_heads",
            "attention_head_dim",
            "text_embed_dim",
            "pooled_projection_dim",
            "image_proj_dim",
            "patch_size",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(
                    f"TransformerConfig.{name} must be a positive integer, got {getattr(self, name)!r}"
                )
        for name in ("num_layers", "num_single_layers", "num_refiner_layers", "head_hidden"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"TransformerConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.patch_size_t != 1:
            raise ValueError(
                f"TransformerConfig.patch_size_t must be 1 (one token row per latent frame), got {self.patch_size_t}"
            )
        if self.qk_norm not in QK_NORMS:
            raise ValueError(f"TransformerConfig.qk_norm must be one of {QK_NORMS}, got {self.qk_norm!r}")
        if self.image_condition_type is not None:
            raise ValueError(
                f"TransformerConfig.image_condition_type must be None (FramePack conditions on packed "
                f"frames), got {self.image_condition_type!r}"
            )
        if self.mlp_ratio <= 0:
            raise ValueError(f"TransformerConfig.mlp_ratio must be > 0, got {self.mlp_ratio}")
        axes = self.rope_axes_dim
        if len(axes) != 3 or any(a <= 0 or a % 2 for a in axes):
            raise ValueError(f"TransformerConfig.rope_axes_dim must be three positive even sizes, got {axes}")
        if sum(axes) != self.attention_head_dim:
            raise ValueError(
                f"TransformerConfig.rope_axes_dim must sum to attention_head_dim={self.attention_head_dim}, "
                f"got {axes} (sum {sum(axes)})"
            )
        self._validate_kernels()

    def _validate_kernels(self) -> None:
        names = [projection_name(k) for k in self.clean_kernels]
        if len(set(names)) != len(names):
            raise ValueError(f"TransformerConfig.clean_kernels must be distinct, got {self.clean_kernels}")
        for kernel in self.clean_kernels:
            if len(kernel) != 3 or any(s < 1 for s in kernel):
                raise ValueError(
                    f"TransformerConfig.clean_kernels entries must be (t, h, w) >= 1, got {kernel}"
                )
            if kernel[1] % self.patch_size or kernel[2] % self.patch_size:
                raise ValueError(
                    f"TransformerConfig.clean_kernels entry {kernel} must have h and w divisible by "
                    f"patch_size={self.patch_size} (RoPE is pooled on the base token grid)"
                )

    @property
    def inner_dim(self) -> int:
        """Transformer width D = heads * head_dim."""
        return self.num_attention_heads * self.attention_head_dim

    @property
    def base_kernel(self) -> Kernel:
        return (self.patch_size_t, self.patch_size, self.patch_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with diffusers' keys; `clean_kernels` only when non-default."""
        data = asdict(self)
        data["rope_axes_dim"] = list(self.rope_axes_dim)
        kernels = data.pop("clean_kernels")
        if self.clean_kernels != DEFAULT_CLEAN_KERNELS:
            data["clean_kernels"] = [list(k) for k in kernels]
        if not self.head_hidden:  # released configs carry no such key
            data.pop("head_hidden")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> tuple[TransformerConfig, list[str]]:
        """Build from a (diffusers) config dict; returns the config and the ignored keys."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        ignored = sorted(k for k in data if k not in known and not k.startswith("_"))
        for flag in ("has_image_proj", "has_clean_x_embedder", "guidance_embeds"):
            if flag in kwargs:
                kwargs[flag] = bool(kwargs[flag])
        if kwargs.get("out_channels") is None:
            kwargs["out_channels"] = kwargs.get("in_channels", cls.in_channels)
        return cls(**kwargs), ignored

    def replace(self, **changes: Any) -> TransformerConfig:
        return replace(self, **changes)


PRESETS: dict[str, TransformerConfig] = {
    # Tests and CPU experiments: width 32, one block of each kind.
    "tiny": TransformerConfig(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        text_embed_dim=32,
        pooled_projection_dim=16,
        rope_axes_dim=(4, 6, 6),
        image_proj_dim=24,
    ),
    # The released FramePack checkpoints (lllyasviel/FramePackI2V_HY, FramePack_F1_I2V_HY_20250503).
    "hunyuan-13b": TransformerConfig(),
}
