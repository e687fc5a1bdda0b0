"""Packing history frames into a bounded transformer context (Sec. 2 of the paper).

CONTRACT (shared by the transformer, training and generation code; keep these names):

- `PackedLevel`: the frames assigned to one compression level.
- `PackedContext`: the levels in *token order* (the released models use coarsest first:
  `[4x | 2x | 1x]`, then the noisy tokens follow inside the transformer).

Built on top of the contract:

- `Level(kernel, frames)` and `Schedule(levels, tail, ...)`: frozen, validated configs. A schedule
  lists its levels from the most important (rank 0 goes to `levels[0]`) to the least important.
- Presets: `SCHEDULES`, `get_schedule(name, **params)`, `parse_schedule("geometric:lambda=2")`, and
  the released index layouts `released_inverted_indices`, `released_f1_indices` (SPEC sec. 5).
- Importance rankings: small callables `(history, history_indices, target_indices, estimate)` ->
  `(B, N)` scores, higher = more important (`TimeProximity`, `FeatureSimilarity`, `Hybrid`,
  `SymmetricTimeProximity`; registry `RANKINGS`).
- `pack(history, history_indices, target_indices, schedule, ...) -> PackedContext`.
- Token counting with the replicate padding the transformer applies (`token_count`,
  `Schedule.token_counts`), matching diffusers' `_pad_for_3d_conv` (ceil division per axis).

Frame positions are always the frames' true indices: packing chooses which frames go to which
level, never where they sit in time (gaps are allowed; RoPE pools positions per kernel window).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from framepack.kernels import BASE_KERNEL, RELEASED_FRAMES, Kernel, kernel_name, power_kernel

TAILS = ("delete", "grow", "pool")
PADS = ("zeros", "none")
PAD_SIDES = ("auto", "before", "after")


# ---------------------------------------------------------------------------------------------
# The contract: packed tensors handed to the transformer.
# ---------------------------------------------------------------------------------------------


@dataclass
class PackedLevel:
    """Frames packed at one level.

    kernel:  patchify kernel (t, h, w) in latent units; the base kernel is (1, 2, 2).
    latents: (B, C, T_l, H, W) the frames of this level, ordered by their frame index.
    indices: (B, T_l) int64, each frame's time (RoPE position); rows may differ.
    """

    kernel: Kernel
    latents: Tensor
    indices: Tensor

    @property
    def num_frames(self) -> int:
        return int(self.latents.shape[2])


@dataclass
class PackedContext:
    """The clean context of one section: levels in token order (coarsest first)."""

    levels: tuple[PackedLevel, ...]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> PackedContext:
        return PackedContext(
            tuple(
                PackedLevel(lv.kernel, lv.latents.to(device=device, dtype=dtype), lv.indices.to(device))
                for lv in self.levels
            )
        )

    def num_tokens(self) -> int:
        """Context tokens the transformer makes from these levels (replicate padding included)."""
        return sum(
            token_count(lv.kernel, lv.num_frames, (lv.latents.shape[3], lv.latents.shape[4]))
            for lv in self.levels
        )


# ---------------------------------------------------------------------------------------------
# Kernels and token counting.
# ---------------------------------------------------------------------------------------------


def token_count(kernel: Kernel, frames: int, latent_hw: tuple[int, int]) -> int:
    """Tokens made by `frames` latent frames of size `latent_hw` patchified with `kernel`.

    Every axis is replicate-padded up to a multiple of the kernel first (as diffusers'
    `_pad_for_3d_conv`), hence ceil division. An empty level makes no tokens.
    """
    if frames <= 0:
        return 0
    t, kh, kw = kernel
    h, w = latent_hw
    return -(-frames // t) * -(-h // kh) * -(-w // kw)


def _check_kernel(kernel: Any, field_name: str) -> Kernel:
    if (
        not isinstance(kernel, tuple | list)
        or len(kernel) != 3
        or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in kernel)
    ):
        raise ValueError(f"{field_name} must be three positive integers (t, h, w), got {kernel!r}")
    return (int(kernel[0]), int(kernel[1]), int(kernel[2]))


# ---------------------------------------------------------------------------------------------
# Schedules.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """One compression level: a patchify kernel (t, h, w) and how many history frames it holds."""

    kernel: Kernel
    frames: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel", _check_kernel(self.kernel, "Level.kernel"))
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or self.frames < 1:
            raise ValueError(f"Level.frames must be an integer >= 1, got {self.frames!r}")

    @property
    def name(self) -> str:
        return kernel_name(self.kernel)


@dataclass(frozen=True)
class Slot:
    """One level as realised for a given history length (see `Schedule.layout`).

    frames counts history frames (zero-padding frames included), anchors the uncompressed anchor
    frames placed in front of them; role is 'level', 'anchors' (a base level holding only the
    anchors), 'grow' or 'pool' (the tail).
    """

    kernel: Kernel
    frames: int
    anchors: int = 0
    role: str = "level"

    @property
    def name(self) -> str:
        return kernel_name(self.kernel)

    @property
    def total_frames(self) -> int:
        return self.frames + self.anchors

    def tokens(self, latent_hw: tuple[int, int]) -> int:
        return token_count(self.kernel, self.total_frames, latent_hw)


@dataclass(frozen=True)
class Schedule:
    """An ordered list of levels, most important first, plus what happens to the tail.

    levels:      frames of rank 0.. go to levels[0], the next ones to levels[1], and so on.
    tail:        frames ranked beyond all levels: 'delete' (released), 'grow' (one more level
                 with `tail_kernel` holds all of them: context grows slowly, linearly at that
                 level's rate) or 'pool' (averaged over time into `pool_frames` latents placed at
                 `tail_kernel`, each at the rounded mean index of the frames it summarises).
    tail_kernel: kernel of the tail level; default: the coarsest level's kernel doubled on every
                 axis for 'grow' (next power level), the coarsest level's kernel for 'pool'.
    pool_frames: number of pooled latents for tail 'pool'.
    ranking:     name of the default importance ranking in `RANKINGS`.
    name:        preset name, for display only.
    """

    levels: tuple[Level, ...]
    tail: str = "delete"
    tail_kernel: Kernel | None = None
    pool_frames: int = 1
    ranking: str = "time"
    name: str = "custom"
    params: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        levels = tuple(self.levels)
        if not levels or not all(isinstance(lv, Level) for lv in levels):
            raise ValueError(f"Schedule.levels must be a non-empty sequence of Level, got {self.levels!r}")
        object.__setattr__(self, "levels", levels)
        if self.tail not in TAILS:
            raise ValueError(f"Schedule.tail must be one of {', '.join(TAILS)}; got {self.tail!r}")
        if self.tail_kernel is not None:
            object.__setattr__(self, "tail_kernel", _check_kernel(self.tail_kernel, "Schedule.tail_kernel"))
        if (
            isinstance(self.pool_frames, bool)
            or not isinstance(self.pool_frames, int)
            or self.pool_frames < 1
        ):
            raise ValueError(f"Schedule.pool_frames must be an integer >= 1, got {self.pool_frames!r}")
        if self.ranking not in RANKINGS:
            raise ValueError(f"Schedule.ranking must be one of {', '.join(RANKINGS)}; got {self.ranking!r}")

    @property
    def capacity(self) -> int:
        """History frames the levels hold (the tail excluded)."""
        return sum(lv.frames for lv in self.levels)

    @property
    def resolved_tail_kernel(self) -> Kernel:
        if self.tail_kernel is not None:
            return self.tail_kernel
        coarsest = max(self.levels, key=lambda lv: math.prod(lv.kernel)).kernel
        if self.tail == "grow":
            return (coarsest[0] * 2, coarsest[1] * 2, coarsest[2] * 2)
        return coarsest

    def layout(self, history_frames: int, *, anchors: int = 0, pad: str = "zeros") -> tuple[Slot, ...]:
        """The non-empty levels realised for `history_frames` frames, in token order (coarsest first).

        pad='zeros' fills every level (missing frames become zero latents, as the released
        history buffer that starts as 19 zeros); pad='none' leaves fine levels full and coarse
        ones short or absent. Anchors join the first base-kernel level (or a level of their own).
        """
        if history_frames < 0:
            raise ValueError(f"history_frames must be >= 0, got {history_frames}")
        if anchors < 0:
            raise ValueError(f"anchors must be >= 0, got {anchors}")
        if pad not in PADS:
            raise ValueError(f"pad must be one of {', '.join(PADS)}; got {pad!r}")
        available = max(history_frames, self.capacity) if pad == "zeros" else history_frames
        slots: list[Slot] = []  # importance order for now
        for lv in self.levels:
            take = min(lv.frames, available)
            available -= take
            slots.append(Slot(lv.kernel, take))
        anchor_at = next((i for i, lv in enumerate(self.levels) if lv.kernel == BASE_KERNEL), None)
        if anchors and anchor_at is None:
            slots.insert(0, Slot(BASE_KERNEL, 0, anchors, role="anchors"))
        elif anchors:
            slots[anchor_at] = Slot(BASE_KERNEL, slots[anchor_at].frames, anchors)
        if available > 0 and self.tail == "grow":
            slots.append(Slot(self.resolved_tail_kernel, available, role="grow"))
        elif available > 0 and self.tail == "pool":
            slots.append(Slot(self.resolved_tail_kernel, min(available, self.pool_frames), role="pool"))
        return tuple(s for s in reversed(slots) if s.total_frames > 0)

    def token_counts(
        self, history_frames: int, latent_hw: tuple[int, int], *, anchors: int = 0, pad: str = "zeros"
    ) -> list[int]:
        """Tokens of each realised level, in token order (coarsest first), see `layout`."""
        check_latent_size(self, latent_hw)
        return [s.tokens(latent_hw) for s in self.layout(history_frames, anchors=anchors, pad=pad)]

    def total_tokens(
        self, history_frames: int, latent_hw: tuple[int, int], *, anchors: int = 0, pad: str = "zeros"
    ) -> int:
        """Context tokens for `history_frames` frames (noisy tokens not included)."""
        return sum(self.token_counts(history_frames, latent_hw, anchors=anchors, pad=pad))


def check_latent_size(schedule: Schedule, latent_hw: tuple[int, int], *, allow_padding: bool = True) -> None:
    """Raise ValueError if `latent_hw` does not suit the schedule's kernels.

    The base kernel (1,2,2) is never padded (as in the released model), so it must divide the
    latent size. Coarser kernels are replicate-padded by the transformer; with
    `allow_padding=False` they must divide the latent size too.
    """
    if (
        len(latent_hw) != 2
        or not all(isinstance(s, int) and s > 0 for s in latent_hw)
        or latent_hw[0] % BASE_KERNEL[1]
        or latent_hw[1] % BASE_KERNEL[2]
    ):
        raise ValueError(
            f"latent_hw must be two positive integers divisible by the base kernel's "
            f"{BASE_KERNEL[1]}x{BASE_KERNEL[2]}, got {tuple(latent_hw)!r}"
        )
    if allow_padding:
        return
    kernels = [lv.kernel for lv in schedule.levels]
    if schedule.tail != "delete":
        kernels.append(schedule.resolved_tail_kernel)
    for k in kernels:
        if latent_hw[0] % k[1] or latent_hw[1] % k[2]:
            raise ValueError(
                f"kernel {k} of schedule {schedule.name!r} does not divide latent_hw {tuple(latent_hw)}; "
                f"use a latent size that is a multiple of {k[1]}x{k[2]} or allow padding"
            )


# ---------------------------------------------------------------------------------------------
# Preset constructors.
# ---------------------------------------------------------------------------------------------


def _check_lambda(lam: float) -> float:
    if isinstance(lam, bool) or not isinstance(lam, int | float) or not math.isfinite(lam) or lam <= 1:
        raise ValueError(f"lambda must be a finite number > 1, got {lam!r}")
    return float(lam)


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


MAX_DEPTH = 12  # power kernel 11 is (2048, 4096, 4096): no latent video is that large


def _check_depth(depth: Any) -> int:
    depth = _check_positive_int(depth, "depth")
    if depth > MAX_DEPTH:
        raise ValueError(
            f"depth must be at most {MAX_DEPTH} (kernel {power_kernel(MAX_DEPTH - 1)} already covers "
            f"any video), got {depth}"
        )
    return depth


def geometric_levels(lam: float, depth: int) -> tuple[Level, ...]:
    """Levels realising phi_i = L_f / lam**i with the power kernels (Sec. 2, Eq. for phi).

    Frame rank i ideally gets compression lam**i; the power kernel j compresses by 8**j. Rank i
    goes to the nearest power level in log scale, j_i = round(i * log(lam) / log(8)), for
    j_i < depth. Consecutive ranks sharing a kernel form one level, so for lam < 8 levels of the
    power sequence are repeated (lam = 2: 2, 3, 3, ... frames per level) and for lam > 8 some are
    dropped (lam = 64: kernels 1x, 4x... only). Each frame's tokens are within a factor sqrt(8)
    of phi_i, so the total stays within that factor of L_f * lam / (lam - 1).
    """
    lam = _check_lambda(lam)
    depth = _check_depth(depth)
    rate = math.log(lam) / math.log(8)
    counts = [0] * depth
    i = 0
    while True:
        j = math.floor(round(i * rate, 9) + 0.5)  # ties round up (more compression)
        if j >= depth:
            break
        counts[j] += 1
        i += 1
    return tuple(Level(power_kernel(j), n) for j, n in enumerate(counts) if n > 0)


def _tail_fields(tail: str, tail_kernel: Kernel | None, pool_frames: int) -> dict[str, Any]:
    return {"tail": tail, "tail_kernel": tail_kernel, "pool_frames": pool_frames}


def released(*, tail: str = "delete", tail_kernel: Kernel | None = None, pool_frames: int = 1) -> Schedule:
    """The released layout (both models): 1x 1 frame (+ the start anchor), 2x 2 frames, 4x 16
    frames; the rest deleted (19 history latents used, SPEC sec. 5)."""
    levels = tuple(Level(kernel, frames) for kernel, frames in RELEASED_FRAMES.items())
    return Schedule(levels, **_tail_fields(tail, tail_kernel, pool_frames), name="released")


def geometric(
    *,
    lam: float = 2.0,
    depth: int = 3,
    tail: str = "delete",
    tail_kernel: Kernel | None = None,
    pool_frames: int = 1,
) -> Schedule:
    """Geometric progression phi_i = L_f / lam**i over `depth` power kernels (`geometric_levels`)."""
    return Schedule(
        geometric_levels(lam, depth),
        **_tail_fields(tail, tail_kernel, pool_frames),
        name="geometric",
        params={"lambda": lam, "depth": depth},
    )


def temporal_duplication(
    *,
    depth: int = 3,
    groups: int = 2,
    tail: str = "delete",
    tail_kernel: Kernel | None = None,
    pool_frames: int = 1,
) -> Schedule:
    """Temporal level duplication: several frames share one level. Power level j holds
    `groups` whole temporal kernels (groups * 2**j frames), so no replicate padding is wasted;
    every level costs groups * L_f / 4**j tokens."""
    depth = _check_depth(depth)
    groups = _check_positive_int(groups, "groups")
    levels = tuple(Level(power_kernel(j), groups * power_kernel(j)[0]) for j in range(depth))
    return Schedule(
        levels,
        **_tail_fields(tail, tail_kernel, pool_frames),
        name="temporal-duplication",
        params={"depth": depth, "groups": groups},
    )


def level_duplication(
    *,
    depth: int = 3,
    copies: int = 2,
    tail: str = "delete",
    tail_kernel: Kernel | None = None,
    pool_frames: int = 1,
) -> Schedule:
    """Level duplication: each power level appears `copies` times as separate levels of one
    temporal kernel each (2**j frames), so tokens never straddle two copies."""
    depth = _check_depth(depth)
    copies = _check_positive_int(copies, "copies")
    levels = tuple(Level(power_kernel(j), power_kernel(j)[0]) for j in range(depth) for _ in range(copies))
    return Schedule(
        levels,
        **_tail_fields(tail, tail_kernel, pool_frames),
        name="level-duplication",
        params={"depth": depth, "copies": copies},
    )


def symmetric(
    *,
    lam: float = 2.0,
    depth: int = 3,
    tail: str = "delete",
    tail_kernel: Kernel | None = None,
    pool_frames: int = 1,
) -> Schedule:
    """Symmetric progression for bi-directional context: the geometric levels with twice the
    frames, ranked by `SymmetricTimeProximity`, so each side of the target gets the same
    progression and importance grows toward the target from both ends."""
    levels = tuple(Level(lv.kernel, 2 * lv.frames) for lv in geometric_levels(lam, depth))
    return Schedule(
        levels,
        **_tail_fields(tail, tail_kernel, pool_frames),
        ranking="symmetric",
        name="symmetric",
        params={"lambda": lam, "depth": depth},
    )


def _named(factory: Callable[..., Schedule], name: str) -> Callable[..., Schedule]:
    def make(**params: Any) -> Schedule:
        sched = factory(**params)
        return Schedule(
            sched.levels,
            tail=sched.tail,
            tail_kernel=sched.tail_kernel,
            pool_frames=sched.pool_frames,
            ranking=sched.ranking,
            name=name,
            params=sched.params,
        )

    make.__doc__ = factory.__doc__
    return make


#: Preset name -> factory taking keyword parameters (`lambda` is spelled `lambda` in
#: `get_schedule` and `parse_schedule`, `lam` in Python).
SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "released-inverted": _named(released, "released-inverted"),
    "released-f1": _named(released, "released-f1"),
    "geometric": geometric,
    "temporal-duplication": temporal_duplication,
    "level-duplication": level_duplication,
    "symmetric": symmetric,
}

_PRESET_PARAMS: dict[str, tuple[str, ...]] = {
    "released-inverted": (),
    "released-f1": (),
    "geometric": ("lambda", "depth"),
    "temporal-duplication": ("depth", "groups"),
    "level-duplication": ("depth", "copies"),
    "symmetric": ("lambda", "depth"),
}
_TAIL_PARAMS = ("tail", "tail_kernel", "pool_frames")


def get_schedule(name: str, **params: Any) -> Schedule:
    """A preset by name with keyword parameters (`lambda`, `depth`, `tail`...), see `SCHEDULES`."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {name!r}")
    allowed = _PRESET_PARAMS[name] + _TAIL_PARAMS
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for schedule {name!r}; allowed: {', '.join(allowed)}"
        )
    kwargs = {("lam" if k == "lambda" else k): v for k, v in params.items()}
    if kwargs.get("tail_kernel") is not None:
        kwargs["tail_kernel"] = _check_kernel(kwargs["tail_kernel"], "tail_kernel")
    return SCHEDULES[name](**kwargs)


def _parse_value(key: str, text: str) -> Any:
    if key == "tail_kernel":
        try:
            return tuple(int(p) for p in text.replace("x", "-").split("-"))
        except ValueError:
            raise ValueError(f"tail_kernel must look like 4x8x8, got {text!r}") from None
    if key in ("tail", "ranking"):
        return text
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    raise ValueError(f"parameter {key} must be a number, got {text!r}")


@functools.lru_cache(maxsize=64)
def parse_schedule(spec: str) -> Schedule:
    """Parse 'NAME' or 'NAME:key=value,key=value' (e.g. 'geometric:lambda=1.5,depth=4,tail=pool').

    Cached: a training step or a section asks for the same frozen Schedule again at no cost."""
    name, colon, rest = spec.strip().partition(":")
    if colon and not rest.strip():
        raise ValueError(f"schedule {spec!r} has a ':' but no parameters; drop the ':' or add key=value")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"schedule parameters must be key=value, got {item!r} in {spec!r}")
        if key.strip() in params:
            raise ValueError(f"schedule parameter {key.strip()!r} is given twice in {spec!r}; give it once")
        params[key.strip()] = _parse_value(key.strip(), value.strip())
    return get_schedule(name.strip(), **params)


# ---------------------------------------------------------------------------------------------
# Released index layouts (SPEC sec. 5), index for index.
# ---------------------------------------------------------------------------------------------


def released_inverted_indices(padding: int, window: int) -> dict[str, Tensor]:
    """Index layout of the inverted model (`FramePackI2V_HY`) for one section.

    `arange(1 + p*w + w + 1 + 2 + 16)` split as [start 1 | blank p*w | noisy w | post 1 | 2x 2 |
    4x 16]; each part is a (1, n) int64 tensor. 'clean' = [start, post] (the 1x level).
    """
    if padding < 0 or window < 1:
        raise ValueError(f"padding must be >= 0 and window >= 1, got padding={padding}, window={window}")
    sizes = [1, padding * window, window, 1, 2, 16]
    parts = torch.arange(sum(sizes)).unsqueeze(0).split(sizes, dim=1)
    out = dict(zip(("start", "blank", "noisy", "post", "2x", "4x"), parts))
    out["clean"] = torch.cat([out["start"], out["post"]], dim=1)
    return out


def released_f1_indices(window: int) -> dict[str, Tensor]:
    """Index layout of the forward model (`FramePack_F1_I2V_HY_20250503`) for one section.

    `arange(1 + 16 + 2 + 1 + w)` split as [start | 4x 16 | 2x 2 | 1x 1 | noisy w]; each part a
    (1, n) int64 tensor. 'clean' = [start, 1x] (the 1x level).
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    sizes = [1, 16, 2, 1, window]
    parts = torch.arange(sum(sizes)).unsqueeze(0).split(sizes, dim=1)
    out = dict(zip(("start", "4x", "2x", "1x", "noisy"), parts))
    out["clean"] = torch.cat([out["start"], out["1x"]], dim=1)
    return out


# ---------------------------------------------------------------------------------------------
# Importance rankings (Sec. 2: time proximity; feature similarity and hybrid).
# ---------------------------------------------------------------------------------------------


class Ranking(Protocol):
    """Scores history frames by importance; higher scores get finer levels.

    history (B, C, N, h, w), history_indices (B, N), target_indices (B, T), estimate
    (B, C, T', h, w) | None: the caller's estimate of the next section -> scores (B, N) float.
    """

    def __call__(
        self, history: Tensor, history_indices: Tensor, target_indices: Tensor, estimate: Tensor | None = None
    ) -> Tensor: ...


def time_distance(history_indices: Tensor, target_indices: Tensor) -> Tensor:
    """(B, N) distance of each history index to the nearest target index."""
    diff = history_indices[:, :, None] - target_indices[:, None, :]  # (B, N, T)
    return diff.abs().amin(dim=2).to(torch.float64)


def cosine_to_estimate(
    history: Tensor, history_indices: Tensor, target_indices: Tensor, estimate: Tensor | None
) -> Tensor:
    """(B, N) cosine similarity of each history latent to the mean latent of `estimate`.

    Without an estimate, the history frame nearest in time to the target stands in for the next
    section (the "most recent frame" estimate of the paper).
    """
    frames = history.transpose(1, 2).flatten(2).to(torch.float64)  # (B, N, C*h*w)
    if estimate is None:
        nearest = time_distance(history_indices, target_indices).argmin(dim=1)  # (B,)
        ref = frames[torch.arange(frames.shape[0]), nearest]  # (B, C*h*w)
    else:
        ref = estimate.to(torch.float64).mean(dim=2).flatten(1)  # (B, C*h*w)
    return torch.nn.functional.cosine_similarity(frames, ref[:, None, :], dim=2, eps=1e-12)


@dataclass(frozen=True)
class TimeProximity:
    """Frames nearer in time to the target section are more important (the default, Sec. 2)."""

    def __call__(
        self, history: Tensor, history_indices: Tensor, target_indices: Tensor, estimate: Tensor | None = None
    ) -> Tensor:
        return -time_distance(history_indices, target_indices)


@dataclass(frozen=True)
class FeatureSimilarity:
    """Frames more similar (cosine) to an estimate of the next section are more important
    (feature-similarity packing, for videos that revisit places). Ties go to the nearer frame."""

    def __call__(
        self, history: Tensor, history_indices: Tensor, target_indices: Tensor, estimate: Tensor | None = None
    ) -> Tensor:
        sim = cosine_to_estimate(history, history_indices, target_indices, estimate)
        dist = time_distance(history_indices, target_indices)
        return sim - 1e-12 * dist / (dist.amax() + 1)


@dataclass(frozen=True)
class Hybrid:
    """Cosine similarity plus a smooth time-proximity term: sim + weight * exp(-distance / tau),
    distance in latent frames (the paper's hybrid metric)."""

    weight: float = 0.5
    tau: float = 8.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"Hybrid.weight must be a finite number >= 0, got {self.weight!r}")
        if not math.isfinite(self.tau) or self.tau <= 0:
            raise ValueError(f"Hybrid.tau must be a finite number > 0, got {self.tau!r}")

    def __call__(
        self, history: Tensor, history_indices: Tensor, target_indices: Tensor, estimate: Tensor | None = None
    ) -> Tensor:
        sim = cosine_to_estimate(history, history_indices, target_indices, estimate)
        dist = time_distance(history_indices, target_indices)
        return sim + self.weight * torch.exp(-dist / self.tau)


@dataclass(frozen=True)
class SymmetricTimeProximity:
    """Time proximity ranked per side of the target and interleaved (before, after, before...),
    so a symmetric schedule gives both sides the same progression (bi-directional context)."""

    def __call__(
        self, history: Tensor, history_indices: Tensor, target_indices: Tensor, estimate: Tensor | None = None
    ) -> Tensor:
        dist = time_distance(history_indices, target_indices)  # (B, N)
        after = history_indices > target_indices.amax(dim=1, keepdim=True)  # (B, N)
        rank_in_side = torch.zeros_like(dist)
        positions = torch.arange(dist.shape[1], device=dist.device, dtype=dist.dtype).expand_as(dist)
        for side in (after, ~after):
            # rank among the frames of one side: sort that side first, nearest first
            order = torch.where(side, dist, math.inf).argsort(dim=1, stable=True)  # (B, N)
            ranks = torch.empty_like(dist).scatter_(1, order, positions)
            rank_in_side = torch.where(side, ranks, rank_in_side)
        # 'before' wins a tie at equal side rank; distance breaks the rest
        return -(2 * rank_in_side + after.to(dist.dtype) + dist / (dist.amax() + 1) / 2)


RANKINGS: dict[str, Callable[..., Ranking]] = {
    "time": TimeProximity,
    "similarity": FeatureSimilarity,
    "hybrid": Hybrid,
    "symmetric": SymmetricTimeProximity,
}


def get_ranking(name: str, **params: Any) -> Ranking:
    """A ranking by name ('time', 'similarity', 'hybrid', 'symmetric') with its parameters."""
    if name not in RANKINGS:
        raise ValueError(f"ranking must be one of {', '.join(RANKINGS)}; got {name!r}")
    return RANKINGS[name](**params)


# ---------------------------------------------------------------------------------------------
# pack()
# ---------------------------------------------------------------------------------------------


def _padding_indices(history_indices: Tensor, target_indices: Tensor, count: int, pad_side: str) -> Tensor:
    """(B, count) indices for zero-padding frames, continuing the history away from the target
    one step at a time ('auto': away from the target, or before it when there is no history)."""
    b = target_indices.shape[0]
    steps = torch.arange(1, count + 1, device=target_indices.device)  # (count,)
    if history_indices.shape[1] == 0:
        before = torch.full((b,), pad_side != "after", dtype=torch.bool, device=target_indices.device)
        lo, hi = target_indices.amin(dim=1), target_indices.amax(dim=1)
    else:
        lo, hi = history_indices.amin(dim=1), history_indices.amax(dim=1)
        if pad_side == "auto":
            before = target_indices.to(torch.float64).mean(dim=1) >= history_indices.to(torch.float64).mean(
                dim=1
            )
        else:
            before = torch.full((b,), pad_side == "before", dtype=torch.bool, device=target_indices.device)
    return torch.where(before[:, None], lo[:, None] - steps, hi[:, None] + steps)  # (B, count)


def _gather(frames: Tensor, index: Tensor) -> Tensor:
    """frames (B, C, N, h, w), index (B, K) -> (B, C, K, h, w)."""
    rows = torch.arange(frames.shape[0], device=frames.device)[:, None]
    return frames.transpose(1, 2)[rows, index].transpose(1, 2)


def _sorted_by_index(latents: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    order = indices.argsort(dim=1, stable=True)
    return _gather(latents, order), indices.gather(1, order)


def pack(
    history: Tensor,
    history_indices: Tensor,
    target_indices: Tensor,
    schedule: Schedule,
    *,
    anchors: Tensor | None = None,
    anchor_indices: Tensor | None = None,
    ranking: Ranking | None = None,
    estimate: Tensor | None = None,
    pad: Literal["zeros", "none"] = "zeros",
    pad_side: Literal["auto", "before", "after"] = "auto",
) -> PackedContext:
    """Assign history frames to the schedule's levels by importance and gather them.

    history (B, C, N, h, w) with history_indices (B, N) int64 (true frame times, gaps allowed);
    target_indices (B, T) the section to predict; anchors (B, C, A, h, w) with anchor_indices
    (B, A) are always placed uncompressed at the 1x level, before its history frames (released:
    clean_latents = [start, post]). ranking defaults to the schedule's (`RANKINGS[schedule.ranking]`);
    estimate (B, C, T', h, w) is passed to it (feature similarity). Each row is ranked on its
    own, but every row of a level gets the same frame count, so levels stack.

    pad='zeros' fills levels beyond the available history with zero latents ranked last, at
    indices continuing the history away from the target (`pad_side`); pad='none' leaves them
    short or absent. Returns the non-empty levels in token order (coarsest first), matching
    `schedule.layout(N, anchors=A, pad=pad)` one to one; frames in a level sorted by index.
    """
    if history.ndim != 5:
        raise ValueError(f"history must be (B, C, N, h, w), got shape {tuple(history.shape)}")
    b, c, n, h, w = history.shape
    if history_indices.shape != (b, n):
        raise ValueError(f"history_indices must be (B, N) = {(b, n)}, got {tuple(history_indices.shape)}")
    if target_indices.ndim != 2 or target_indices.shape[0] != b or target_indices.shape[1] < 1:
        raise ValueError(
            f"target_indices must be (B, T) with B = {b}, T >= 1, got {tuple(target_indices.shape)}"
        )
    if (anchors is None) != (anchor_indices is None):
        raise ValueError("anchors and anchor_indices must be given together")
    if anchors is not None and (
        anchors.ndim != 5
        or anchors.shape[:2] != (b, c)
        or anchors.shape[3:] != (h, w)
        or anchor_indices.shape != (b, anchors.shape[2])
    ):
        raise ValueError(
            f"anchors must be (B, C, A, h, w) = ({b}, {c}, A, {h}, {w}) with anchor_indices (B, A), got "
            f"{tuple(anchors.shape)} and {tuple(anchor_indices.shape)}"
        )
    if pad_side not in PAD_SIDES:
        raise ValueError(f"pad_side must be one of {', '.join(PAD_SIDES)}; got {pad_side!r}")
    num_anchors = 0 if anchors is None else anchors.shape[2]
    slots = schedule.layout(n, anchors=num_anchors, pad=pad)
    history_indices = history_indices.to(torch.int64)

    # Rank every row (stable: ties keep the given order), then append the padding frames.
    rank = ranking if ranking is not None else get_ranking(schedule.ranking)
    if n > 0:
        scores = rank(history, history_indices, target_indices, estimate)  # (B, N)
        order = scores.argsort(dim=1, descending=True, stable=True)  # (B, N) best first
    else:
        order = history_indices.new_zeros((b, 0))
    if not any(slot.role == "pool" for slot in slots):  # only the frames the slots take are used:
        order = order[:, : sum(slot.frames for slot in slots)]  # gather those alone (flat cost in N)
    frames, indices = _gather(history, order), history_indices.gather(1, order)
    missing = schedule.capacity - n if pad == "zeros" else 0
    if missing > 0:
        zeros = history.new_zeros((b, c, missing, h, w))
        pad_idx = _padding_indices(history_indices, target_indices.to(torch.int64), missing, pad_side)
        frames = torch.cat([frames[:, :, : schedule.capacity], zeros], dim=2)
        indices = torch.cat([indices[:, : schedule.capacity], pad_idx], dim=1)

    # Hand out ranked frames to the levels, most important first; the pool takes the rest.
    levels: list[PackedLevel] = []
    start = 0
    for slot in reversed(slots):  # importance order
        if slot.role == "pool":
            lat, idx = _pool(*_sorted_by_index(frames[:, :, start:], indices[:, start:]), slot.frames)
        else:
            end = start + slot.frames
            lat, idx = _sorted_by_index(frames[:, :, start:end], indices[:, start:end])
            start = end
        if slot.anchors:
            anc, anc_idx = _sorted_by_index(anchors, anchor_indices.to(torch.int64))
            lat, idx = torch.cat([anc.to(lat.dtype), lat], dim=2), torch.cat([anc_idx, idx], dim=1)
        levels.append(PackedLevel(slot.kernel, lat, idx))
    return PackedContext(tuple(reversed(levels)))


def _pool(latents: Tensor, indices: Tensor, groups: int) -> tuple[Tensor, Tensor]:
    """Average time-sorted frames (B, C, R, h, w) in `groups` consecutive chunks -> (B, C, groups,
    h, w) and the rounded mean index of each chunk (B, groups)."""
    chunks = torch.arange(latents.shape[2], device=latents.device).tensor_split(groups)
    lat = torch.stack([latents[:, :, ch].float().mean(dim=2) for ch in chunks], dim=2).to(latents.dtype)
    idx = torch.stack([indices[:, ch].double().mean(dim=1).round().long() for ch in chunks], dim=1)
    return lat, idx
