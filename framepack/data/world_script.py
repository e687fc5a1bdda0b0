"""Camera scripts for the procedural world: actions, exact camera paths, caption timelines.

A script is a start position and a sequence of actions, each "pan <direction> at <speed> px/s
for <seconds>" or "hold for <seconds>". The camera path is exact: positions are computed with
rational arithmetic as a function of time and rounded to whole pixels only at the end, so a
script that pans right for 2 s and left for 2 s at the same speed comes back to the very same
pixel, and at time 2 + u it shows exactly the view it showed at time 2 - u. Revisits like these
are what feature-similarity packing (SPEC Sec. 2) is meant to exploit.

Coordinates: x grows to the right, y grows downwards. "The camera pans right" means the view
moves right over the world, so the content slides left on screen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "hold": (0, 0),
}

# Named speeds in pixels per second: 1.5, 3 and 5 px per frame at 30 fps. None of them moves the
# picture by a whole number of 8-pixel latent pixels (or tokens) per 4-frame latent (6, 12 and 20
# px), so no measure is tuned to a codec (issue 20; the fourth demo run's 2/4/6 px per frame were,
# docs/training.md "Whole-token pans"). Sub-pixel positions are rounded per frame from the exact path.
SPEEDS: dict[str, int] = {"slowly": 45, "steadily": 90, "quickly": 150}

_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "hold": "hold"}


@dataclass(frozen=True)
class Action:
    """One camera action: pan in `direction` at `speed` pixels per second for `seconds`.

    `direction` is one of `DIRECTIONS` ("hold" keeps the camera still; its speed is ignored).
    """

    direction: str
    seconds: float
    speed: float = SPEEDS["steadily"]

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {sorted(DIRECTIONS)}, got {self.direction!r}")
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"seconds must be a positive number, got {self.seconds!r}")
        if not (math.isfinite(self.speed) and self.speed >= 0):
            raise ValueError(f"speed must be a non-negative number of px/s, got {self.speed!r}")

    @property
    def caption(self) -> str:
        """The sentence describing this action, e.g. "the camera pans right slowly"."""
        if self.direction == "hold" or self.speed == 0:
            return "the camera holds still"
        return f"the camera pans {self.direction} {speed_word(self.speed)}"

    def reversed(self) -> Action:
        """The action that undoes this one (same speed and duration, opposite direction)."""
        return Action(_OPPOSITE[self.direction], self.seconds, self.speed)


@dataclass(frozen=True)
class Script:
    """A camera script: the view centre starts at `start` (world pixels) and follows `actions`."""

    actions: tuple[Action, ...]
    start: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if not self.actions:
            raise ValueError("actions must hold at least one Action")
        object.__setattr__(self, "actions", tuple(self.actions))
        object.__setattr__(self, "start", (int(self.start[0]), int(self.start[1])))

    @property
    def seconds(self) -> float:
        """Total duration in seconds."""
        return float(sum(as_fraction(a.seconds) for a in self.actions))

    def to_json(self) -> dict:
        """A JSON-ready description (round-trips through `Script.from_json`)."""
        return {
            "start": list(self.start),
            "actions": [
                {"direction": a.direction, "seconds": a.seconds, "speed": a.speed} for a in self.actions
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> Script:
        actions = tuple(
            Action(a["direction"], a["seconds"], a.get("speed", SPEEDS["steadily"])) for a in data["actions"]
        )
        return cls(actions, tuple(data.get("start", (0, 0))))


def speed_word(speed: float) -> str:
    """The adverb for a pan speed in px/s: the nearest named speed (on a log scale)."""
    return min(SPEEDS, key=lambda w: abs(math.log(speed / SPEEDS[w])))


def all_captions() -> list[str]:
    """Every caption a script can produce: "holds still", then 4 directions x 3 speeds."""
    pans = [Action(d, 1.0, v).caption for d in ("left", "right", "up", "down") for v in SPEEDS.values()]
    return [Action("hold", 1.0, 0).caption, *pans]


def caption_action(caption: str) -> Action | None:
    """The action a caption describes (1 s long), or None when it is not a world caption."""
    words = caption.lower().strip().rstrip(".").split()
    if words == ["the", "camera", "holds", "still"]:
        return Action("hold", 1.0, 0)
    pan = len(words) == 5 and words[:3] == ["the", "camera", "pans"]
    if pan and words[3] in DIRECTIONS and words[3] != "hold" and words[4] in SPEEDS:
        return Action(words[3], 1.0, SPEEDS[words[4]])
    return None


def content_velocity(action: Action, fps: float) -> tuple[float, float]:
    """How fast the picture moves on screen under `action`, in (x, y) pixels per frame.

    The camera pans right -> the content slides left: the negative of the camera velocity.
    """
    dx, dy = DIRECTIONS[action.direction]
    step = action.speed / fps
    return (-dx * step + 0.0, -dy * step + 0.0)


def prompted_velocity(timeline: list[tuple[float, str]], num_frames: int, fps: float) -> np.ndarray:
    """Content velocity (x, y) in pixels per frame that a caption timeline asks for, float64
    `(num_frames, 2)`; row f is the step from frame f - 1 to f (row 0 is zero). Rows under a
    caption that is not a world caption are NaN."""
    out = np.zeros((num_frames, 2))
    for f in range(1, num_frames):
        action = caption_action(caption_at(timeline, (f - 0.5) / fps))
        out[f] = content_velocity(action, fps) if action is not None else (np.nan, np.nan)
    return out


def as_fraction(x: float) -> Fraction:
    """The rational a float stands for: 0.1 -> 1/10 (not the binary float's exact value)."""
    return Fraction(x).limit_denominator(10_000)


def camera_path(script: Script, num_frames: int, fps: float) -> np.ndarray:
    """Camera (view centre) positions for frames `0..num_frames-1`, frame f at time f / fps.

    Returns int64 `(num_frames, 2)` of world (x, y). Positions are exact rationals rounded half
    up, so equal times on the way out and back give identical pixels. Past the end of the
    script the camera stays where the script left it.
    """
    # Exact integer arithmetic, vectorised over frames: times are counted in units of 1/L
    # seconds and distances in units of 1/(L*M) pixels (L, M: common denominators).
    fps_q = as_fraction(fps)
    starts, t = [], Fraction(0)
    for a in script.actions:
        starts.append(t)
        t += as_fraction(a.seconds)
    durations = [as_fraction(a.seconds) for a in script.actions]
    speeds = [as_fraction(a.speed) for a in script.actions]
    L = math.lcm(fps_q.numerator, *(x.denominator for x in starts + durations))
    M = math.lcm(*(v.denominator for v in speeds))
    time_l = np.arange(num_frames).astype(object) * (fps_q.denominator * L // fps_q.numerator)  # t * L
    out = np.empty((num_frames, 2), dtype=np.int64)
    for axis in (0, 1):
        moved = np.zeros(num_frames, dtype=object)  # in units of 1 / (L * M) pixels
        for a, s, d, v in zip(script.actions, starts, durations, speeds):
            step = DIRECTIONS[a.direction][axis] * v.numerator * (M // v.denominator)
            if step:
                moved = moved + step * np.minimum(np.maximum(time_l - int(s * L), 0), int(d * L))
        scale = L * M
        out[:, axis] = (2 * (script.start[axis] * scale + moved) + scale) // (2 * scale)  # round half up
    return out


def caption_timeline(script: Script) -> list[tuple[float, str]]:
    """The captions of a script as `[(start_seconds, text), ...]`; repeated texts are merged."""
    timeline: list[tuple[float, str]] = []
    t = Fraction(0)
    for a in script.actions:
        if not timeline or timeline[-1][1] != a.caption:
            timeline.append((float(t), a.caption))
        t += as_fraction(a.seconds)
    return timeline


def caption_at(timeline: list[tuple[float, str]], seconds: float) -> str:
    """The caption active at time `seconds` (the last entry starting at or before it)."""
    text = timeline[0][1] if timeline else ""
    for start, caption in timeline:
        if start <= seconds + 1e-9:
            text = caption
    return text


def format_timeline(timeline: list[tuple[float, str]]) -> str:
    """The prompt-timeline string used by the generator: "0s: text; 4s: text"."""
    return "; ".join(f"{start:g}s: {text}" for start, text in timeline)


def parse_script(text: str, start: tuple[int, int] = (0, 0)) -> Script:
    """Parse "right 2 slowly, hold 1, left 2 30" into a Script.

    Each comma-separated action is `<direction> <seconds> [<speed>]` where speed is a word of
    `SPEEDS` or a number of px/s (default "steadily"). Raises ValueError on malformed text.
    """
    actions = []
    for part in text.split(","):
        words = part.split()
        if not 2 <= len(words) <= 3:
            raise ValueError(f"script action {part.strip()!r} must read '<direction> <seconds> [<speed>]'")
        direction, seconds = words[0].lower(), float(words[1].rstrip("s"))
        speed: float = SPEEDS["steadily"]
        if len(words) == 3:
            speed = SPEEDS[words[2]] if words[2] in SPEEDS else float(words[2])
        actions.append(Action(direction, seconds, speed))
    return Script(tuple(actions), start)


def random_script(
    seed: int,
    seconds: float,
    fps: float = 30,
    *,
    min_action: float = 1.0,
    max_action: float = 3.0,
    p_return: float = 0.35,
    p_hold: float = 0.15,
    start_range: int = 1 << 20,
    speed_range: tuple[float, float] | None = None,
) -> Script:
    """A random script of total duration `seconds`, fully determined by `seed`.

    Action durations are whole frames at `fps`, drawn in [min_action, max_action] seconds; with
    probability `p_return` an action retraces the previous pan (so the camera revisits places),
    with `p_hold` it holds still, otherwise it pans in a random direction at a named speed. An
    action with no pan to retrace (the first, or one after a hold) holds with probability
    `p_return + p_hold` (kept so that the default scripts stay as they were); with `p_hold=0` a
    script never holds (a minute with pans throughout, issue 20). The start position is drawn in [-start_range, start_range) so clips see different places. With
    `speed_range` (lo, hi) in px/s a pan's speed is drawn uniformly from it instead of the named
    speeds (a codec's training data: every speed, not three); its caption names the nearest word.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds!r}")
    if not 0 < min_action <= max_action:
        raise ValueError(f"need 0 < min_action <= max_action, got {min_action}, {max_action}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5C819]))
    total = max(1, round(seconds * fps))
    lo, hi = max(1, round(min_action * fps)), max(1, round(max_action * fps))
    start = (int(rng.integers(-start_range, start_range)), int(rng.integers(-start_range, start_range)))
    actions: list[Action] = []
    used = 0
    while used < total:
        frames = min(int(rng.integers(lo, hi + 1)), total - used)
        last_pan = actions[-1] if actions and actions[-1].direction != "hold" else None
        u = rng.random()
        if last_pan is not None and u < p_return:
            frames = min(round(last_pan.seconds * fps), total - used)
            action = Action(_OPPOSITE[last_pan.direction], frames / fps, last_pan.speed)
        elif p_hold > 0 and u < p_return + p_hold:
            action = Action("hold", frames / fps, 0)
        else:
            direction = ("left", "right", "up", "down")[int(rng.integers(4))]
            if speed_range is None:
                speed = list(SPEEDS.values())[int(rng.integers(len(SPEEDS)))]
            else:
                speed = round(float(rng.uniform(*speed_range)), 3)
            action = Action(direction, frames / fps, speed)
        actions.append(action)
        used += frames
    return Script(tuple(actions), start)
