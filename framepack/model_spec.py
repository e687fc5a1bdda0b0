"""What a generation needs from a model, independent of which model it is: the data types.

`Components` bundles the packed transformer, the codec (pixels <-> latents), the prompt encoder,
an optional image encoder and a `ModelSpec` of defaults (fps, window, plan, steps...);
`LoadOptions` says how to load them. The loaders (framepack.components for the bundled demo and
model folders, framepack.hunyuan.components for the released checkpoints) fill these types, so
the generation loop has one code path and no loader imports another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from framepack.discretize import Codebook
from framepack.options import DTYPES, LoadOptions
from framepack.plans import MODES

__all__ = ["BUILTIN_MODELS", "DTYPES", "MODES", "Components", "LoadOptions", "ModelSpec"]

BUILTIN_MODELS = ("demo", "hunyuan-inverted", "hunyuan-f1")


@dataclass(frozen=True)
class ModelSpec:
    """A model's generation defaults and layout.

    fps:          frames per second the model was trained at.
    window:       latent frames per section (released: 9 = 33 pixel frames).
    mode:         "general" (true frame times, packed by `schedule`) or "released" (the official
                  index layouts of the 13B checkpoints, SPEC sec. 5).
    schedule:     packing schedule spec (`framepack.packing.parse_schedule`), general mode.
    plan:         default section plan.
    steps:        default sampling steps; shift: sigma shift (None: resolution-dependent, capped).
    sampler:      default sampler ("unipc", or "euler": a few-step distilled student's,
                  docs/distill.md).
    guidance:     distilled guidance (None: the model has no guidance embedding).
    cfg:          default real classifier-free guidance on the prompt (1.0 = off).
    size:         (H, W) pixels for models with one size; None: resolution buckets.
    prediction:   "velocity" (released models) or "x0" (converted by sampling.x0_to_velocity).
    layouts:      the section layouts the model was trained for (bundles record them; None: any).
    max_anchor_gap: general mode: the start/keyframe anchors are placed at most this many latent
                  frames before/after the section in RoPE time (None: true times). The released
                  inverted layout caps the gap the same way with its padding (at most 3 windows).
    """

    name: str
    fps: int = 30
    window: int = 9
    mode: str = "general"
    schedule: str = "released-f1"
    plan: str = "inverted"
    steps: int = 25
    sampler: str = "unipc"
    shift: float | None = None
    guidance: float | None = None
    cfg: float = 1.0
    size: tuple[int, int] | None = None
    bucket: int = 640
    max_anchor_gap: int | None = None
    prediction: str = "velocity"
    example_image: str | None = None
    example_prompt: str = ""
    layouts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"ModelSpec.mode must be one of {MODES}, got {self.mode!r}")
        if self.window < 1 or self.fps < 1 or self.steps < 1:
            raise ValueError("ModelSpec.window, fps and steps must be >= 1")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


ImageEncoder = Callable[[Tensor], Tensor]  # (B, 3, H, W) in [-1, 1] -> (B, N, D)


@dataclass
class Components:
    """Everything the generation loop calls. `transformer(...)` follows docs/architecture.md.

    on_job_start(latent_hw, steps) and on_section_start() are optional hooks the pipeline calls
    before the first section and before each section (the released models print their VRAM
    estimate and reset TeaCache there). choose_size(height, width) gives the video's (H, W) for
    a start image of that size, for models without one fixed `spec.size` (the released models:
    the nearest resolution bucket). history_codebook: the codebook a model was trained with
    (`--discretize-history K`, framepack.discretize); the pipeline discretizes generated history
    with it (general mode only; None: continuous history).
    """

    spec: ModelSpec
    transformer: nn.Module
    codec: Any  # framepack.codecs.base.Codec
    prompt_encoder: Any  # framepack.text.base.PromptEncoder
    image_encoder: ImageEncoder | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    source: str = ""
    on_job_start: Callable[[tuple[int, int], int], None] | None = None
    on_section_start: Callable[[], None] | None = None
    choose_size: Callable[[int, int], tuple[int, int]] | None = None
    history_codebook: Codebook | None = None
