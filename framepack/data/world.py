"""A procedural 2-D world seen through a moving camera: video data whose truth is known.

The world is endless and deterministic: the static map is a pure function of (seed, x, y) in
integer world pixels, so the same place always looks the same, however and whenever the camera
reaches it. The map is drawn from a fixed palette of 16 colours with exact pixels (no
anti-aliasing): Voronoi regions of ground colours (water, sand, grass, forest, rock) carry
landmarks (squares, crosses, circles, diamonds) in landmark colours. A few moving objects with a
persistent identity (object colour + shape) glide at constant velocity over a torus of period
`object_period`, i.e. they wrap around in world coordinates; every copy of an object is the same
object, and a 64x64 view shows at most one copy of each.

Rendering is vectorised numpy: the map is computed per 64x64 tile as a palette-index image and
cached, a frame is a few tile slices plus object sprites, then one palette lookup. Ground truth
(camera position, object states) comes with every clip, so drift and forgetting can be measured
exactly (SPEC Sec. 6).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from framepack.data.world_script import Script, as_fraction, camera_path, caption_timeline

# Palette: 16 RGB colours; index ranges are reserved per role so pixels tell what they show.
PALETTE = np.array(
    [
        # ground (regions)
        (28, 58, 138),  # 0 deep water
        (62, 124, 204),  # 1 shallow water
        (222, 202, 142),  # 2 sand
        (74, 152, 62),  # 3 grass
        (32, 92, 44),  # 4 forest
        (124, 122, 118),  # 5 rock
        # landmarks
        (18, 18, 18),  # 6 black
        (122, 74, 34),  # 7 brown
        (112, 58, 162),  # 8 purple
        (236, 172, 150),  # 9 pink
        (242, 132, 22),  # 10 orange
        # moving objects
        (232, 30, 42),  # 11 red
        (252, 222, 40),  # 12 yellow
        (252, 252, 252),  # 13 white
        (242, 62, 204),  # 14 magenta
        (60, 232, 232),  # 15 cyan
    ],
    dtype=np.uint8,
)
PALETTE.setflags(write=False)
COLOUR_NAMES = (
    "deep water", "shallow water", "sand", "grass", "forest", "rock",
    "black", "brown", "purple", "pink", "orange",
    "red", "yellow", "white", "magenta", "cyan",
)  # fmt: skip
GROUND_COLOURS = tuple(range(0, 6))
LANDMARK_COLOURS = tuple(range(6, 11))
OBJECT_COLOURS = tuple(range(11, 16))
LANDMARK_SHAPES = ("square", "cross", "circle", "diamond")
OBJECT_SHAPES = ("ball", "box", "diamond", "triangle")


@dataclass(frozen=True)
class WorldConfig:
    """What a world looks like (all lengths in world pixels, speeds in pixels per second).

    region_size: spacing of the Voronoi region seeds; landmark_cell: one landmark at most per
    cell of this size, present with probability landmark_density, radius in landmark_radius;
    num_objects moving objects (at most len(OBJECT_COLOURS), one colour each) of radius in
    object_radius with speeds per axis in object_speed, wrapping with period object_period.
    """

    region_size: int = 48
    landmark_cell: int = 32
    landmark_density: float = 0.6
    landmark_radius: tuple[int, int] = (3, 7)
    num_objects: int = 3
    object_radius: tuple[int, int] = (3, 5)
    object_speed: tuple[int, int] = (10, 40)
    object_period: int = 256
    tile: int = 64

    def __post_init__(self) -> None:
        if self.region_size < 4:
            raise ValueError(f"region_size must be >= 4, got {self.region_size}")
        lo, hi = self.landmark_radius
        if not 1 <= lo <= hi or 2 * hi + 3 > self.landmark_cell:
            raise ValueError(
                f"landmark_radius must satisfy 1 <= lo <= hi and 2*hi+3 <= landmark_cell={self.landmark_cell}, "
                f"got {self.landmark_radius}"
            )
        if not 0.0 <= self.landmark_density <= 1.0:
            raise ValueError(f"landmark_density must be in [0, 1], got {self.landmark_density}")
        if not 0 <= self.num_objects <= len(OBJECT_COLOURS):
            raise ValueError(f"num_objects must be in 0..{len(OBJECT_COLOURS)}, got {self.num_objects}")
        lo, hi = self.object_radius
        if not 1 <= lo <= hi or 4 * hi + 2 > self.object_period:
            raise ValueError(
                f"object_radius must satisfy 1 <= lo <= hi <= object_period/4, got {self.object_radius}"
            )
        lo, hi = self.object_speed
        if not 0 <= lo <= hi:
            raise ValueError(f"object_speed must satisfy 0 <= lo <= hi, got {self.object_speed}")
        if self.tile < 8:
            raise ValueError(f"tile must be >= 8, got {self.tile}")


@dataclass(frozen=True)
class WorldObject:
    """A moving object: identity (id, colour, shape, radius) and motion (start, velocity px/s)."""

    id: int
    colour: int
    shape: str
    radius: int
    start: tuple[int, int]
    velocity: tuple[int, int]

    def position(self, seconds: Fraction | float, period: int) -> tuple[int, int]:
        """Centre in world pixels at time `seconds`, wrapped into [0, period)."""
        t = seconds if isinstance(seconds, Fraction) else as_fraction(seconds)
        return tuple(
            math.floor(p + v * t + Fraction(1, 2)) % period for p, v in zip(self.start, self.velocity)
        )


# -- hashing: a stateless integer hash of (seed, cell, salt), vectorised over numpy arrays ------


def _splitmix(h: np.ndarray) -> np.ndarray:
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _hash(seed: int, salt: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """uint64 hash of integer arrays i, j (broadcast), distinct per seed and salt."""
    h = np.full(
        np.broadcast_shapes(np.shape(i), np.shape(j)), (seed * 0x9E3779B97F4A7C15 + salt) % 2**64, np.uint64
    )
    h = _splitmix(h ^ np.asarray(i, np.int64).astype(np.uint64))
    return _splitmix(h ^ np.asarray(j, np.int64).astype(np.uint64))


def _uniform_int(h: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Map hashes to integers in [lo, hi] (int64)."""
    return (h % np.uint64(hi - lo + 1)).astype(np.int64) + lo


class World:
    """The world of one seed: `map_indices` for the static map, `objects` for the moving ones."""

    def __init__(self, seed: int, config: WorldConfig | None = None, cache_tiles: int = 4096):
        self.seed = int(seed)
        self.config = config or WorldConfig()
        self.objects = self._make_objects()
        self._tiles: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_tiles = cache_tiles

    def __repr__(self) -> str:
        return f"World(seed={self.seed}, config={self.config})"

    # -- static map ----------------------------------------------------------------------------

    def map_indices(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Palette indices of the static map at world columns `xs` (W,) and rows `ys` (H,).

        Computed from scratch (no cache); returns uint8 `(H, W)`. Pure in (seed, x, y).
        """
        xs, ys = np.asarray(xs, np.int64), np.asarray(ys, np.int64)
        out = self._regions(xs, ys)
        mask, colour = self._landmarks(xs, ys)
        out[mask] = colour[mask]
        return out

    def _regions(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        # Voronoi cells: one jittered seed point per R x R cell; each pixel takes the colour of
        # the nearest seed among its own and the 8 neighbouring cells.
        r = self.config.region_size
        cx, cy = xs // r, ys // r  # (W,), (H,)
        gx = np.arange(cx.min() - 1, cx.max() + 2)  # cell columns covered, with a margin
        gy = np.arange(cy.min() - 1, cy.max() + 2)
        h = _hash(self.seed, 1, gy[:, None], gx[None, :])  # (gh, gw)
        px = gx[None, :] * r + _uniform_int(h, 0, r - 1)
        py = gy[:, None] * r + _uniform_int(h >> np.uint64(16), 0, r - 1)
        colour = np.asarray(GROUND_COLOURS, np.uint8)[
            _uniform_int(h >> np.uint64(32), 0, len(GROUND_COLOURS) - 1)
        ]
        col, row = (cx - gx[0])[None, :], (cy - gy[0])[:, None]  # (1, W), (H, 1) indices into the grid
        best = np.full((len(ys), len(xs)), np.iinfo(np.int64).max, np.int64)
        out = np.zeros((len(ys), len(xs)), np.uint8)
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                rr, cc = row + di, col + dj
                d = (px[rr, cc] - xs[None, :]) ** 2 + (py[rr, cc] - ys[:, None]) ** 2
                closer = d < best
                best = np.where(closer, d, best)
                out = np.where(closer, colour[rr, cc], out)
        return out

    def _landmarks(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # At most one landmark per L x L cell, fully inside its cell (1 px margin), so each
        # pixel only needs its own cell's landmark.
        c = self.config
        size = c.landmark_cell
        cx, cy = xs // size, ys // size
        gx, gy = np.arange(cx.min(), cx.max() + 1), np.arange(cy.min(), cy.max() + 1)
        h = _hash(self.seed, 2, gy[:, None], gx[None, :])
        present = (h % np.uint64(1 << 16)).astype(np.float64) < c.landmark_density * (1 << 16)
        radius = _uniform_int(h >> np.uint64(16), *c.landmark_radius)
        shape = _uniform_int(h >> np.uint64(24), 0, len(LANDMARK_SHAPES) - 1)
        colour = np.asarray(LANDMARK_COLOURS, np.uint8)[
            _uniform_int(h >> np.uint64(28), 0, len(LANDMARK_COLOURS) - 1)
        ]
        span = size - 2 * radius - 2  # centre offsets in [radius + 1, size - radius - 2]
        ox = radius + 1 + ((h >> np.uint64(36)) % span.astype(np.uint64)).astype(np.int64)
        oy = radius + 1 + ((h >> np.uint64(48)) % span.astype(np.uint64)).astype(np.int64)
        row, col = (cy - gy[0])[:, None], (cx - gx[0])[None, :]
        dx = np.abs(xs[None, :] - (gx[None, :] * size + ox)[row, col])  # (H, W)
        dy = np.abs(ys[:, None] - (gy[:, None] * size + oy)[row, col])
        r, s = radius[row, col], shape[row, col]
        thick = np.maximum(1, r // 3)
        inside = np.select(
            [s == 0, s == 1, s == 2],
            [
                np.maximum(dx, dy) <= r,  # square
                ((dx <= thick) & (dy <= r)) | ((dy <= thick) & (dx <= r)),  # cross
                dx * dx + dy * dy <= r * r + r,  # circle
            ],
            dx + dy <= r,  # diamond
        )
        return inside & present[row, col], colour[row, col]

    def tile(self, tx: int, ty: int) -> np.ndarray:
        """The cached map tile `(tile, tile)` uint8 covering world [tx*tile, (tx+1)*tile) x [ty*...)."""
        key = (tx, ty)
        tile = self._tiles.get(key)
        if tile is None:
            t = self.config.tile
            tile = self.map_indices(np.arange(tx * t, tx * t + t), np.arange(ty * t, ty * t + t))
            tile.setflags(write=False)
            self._tiles[key] = tile
            if len(self._tiles) > self._cache_tiles:
                self._tiles.popitem(last=False)
        else:
            self._tiles.move_to_end(key)
        return tile

    def map_view(self, x0: int, y0: int, height: int, width: int) -> np.ndarray:
        """Map indices `(height, width)` uint8 of the window with top-left world pixel (x0, y0)."""
        t = self.config.tile
        out = np.empty((height, width), np.uint8)
        for ty in range(y0 // t, (y0 + height - 1) // t + 1):
            ya, yb = max(y0, ty * t), min(y0 + height, ty * t + t)
            for tx in range(x0 // t, (x0 + width - 1) // t + 1):
                xa, xb = max(x0, tx * t), min(x0 + width, tx * t + t)
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = self.tile(tx, ty)[
                    ya - ty * t : yb - ty * t, xa - tx * t : xb - tx * t
                ]
        return out

    # -- moving objects ------------------------------------------------------------------------

    def _make_objects(self) -> tuple[WorldObject, ...]:
        c = self.config
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x0B1EC7]))
        colours = rng.permutation(OBJECT_COLOURS)[: c.num_objects]
        objects = []
        for k, colour in enumerate(colours):
            speed = rng.integers(c.object_speed[0], c.object_speed[1] + 1, size=2) * rng.choice(
                [-1, 1], size=2
            )
            objects.append(
                WorldObject(
                    id=k,
                    colour=int(colour),
                    shape=OBJECT_SHAPES[int(rng.integers(len(OBJECT_SHAPES)))],
                    radius=int(rng.integers(c.object_radius[0], c.object_radius[1] + 1)),
                    start=(int(rng.integers(c.object_period)), int(rng.integers(c.object_period))),
                    velocity=(int(speed[0]), int(speed[1])),
                )
            )
        return tuple(objects)

    def object_positions(self, seconds: Fraction | float) -> np.ndarray:
        """Object centres int64 `(K, 2)` in world pixels at time `seconds`, in [0, object_period)."""
        period = self.config.object_period
        return np.array([o.position(seconds, period) for o in self.objects], np.int64).reshape(-1, 2)

    def object_tracks(self, num_frames: int, fps: float) -> np.ndarray:
        """Object centres int64 `(num_frames, K, 2)` for frames at times f / fps (exact, as
        `WorldObject.position`, vectorised over frames)."""
        fps_q = as_fraction(fps)
        p, q = fps_q.numerator, fps_q.denominator
        f = np.arange(num_frames, dtype=object)[:, None, None]
        start = np.array([o.start for o in self.objects], dtype=object).reshape(1, -1, 2)
        velocity = np.array([o.velocity for o in self.objects], dtype=object).reshape(1, -1, 2)
        # start + v * f / fps, rounded half up: floor((2 * (start * p + v * f * q) + p) / (2p))
        pos = (2 * (start * p + velocity * f * q) + p) // (2 * p) % self.config.object_period
        return pos.astype(np.int64)

    def draw_objects(
        self, index: np.ndarray, x0: int, y0: int, positions: np.ndarray
    ) -> list[dict[str, Any]]:
        """Draw the objects at `positions` (K, 2) into the index image `index` (H, W) in place.

        The image's top-left pixel is world (x0, y0). Returns each object's state as a dict:
        id, colour (palette index), rgb, shape, radius, position (canonical world centre in
        [0, object_period)), velocity (px/s), screen (centre of the copy nearest the view
        centre, in image pixels) and visible (any of its pixels inside the image).
        """
        height, width = index.shape
        period = self.config.object_period
        states = []
        for obj, (ox, oy) in zip(self.objects, positions.tolist()):
            r, sprite = obj.radius, _sprite(obj.shape, obj.radius)
            visible = False
            for sx in _copies(ox - x0, r, width, period):
                for sy in _copies(oy - y0, r, height, period):
                    visible |= _blit(index, sprite, sx - r, sy - r, obj.colour)
            near_x = (ox - x0 - width // 2 + period // 2) % period - period // 2 + width // 2
            near_y = (oy - y0 - height // 2 + period // 2) % period - period // 2 + height // 2
            states.append(
                {
                    "id": obj.id,
                    "colour": obj.colour,
                    "rgb": [int(v) for v in PALETTE[obj.colour]],
                    "shape": obj.shape,
                    "radius": r,
                    "position": [ox, oy],
                    "velocity": list(obj.velocity),
                    "screen": [near_x, near_y],
                    "visible": visible,
                }
            )
        return states

    # -- views ----------------------------------------------------------------------------------

    def render_indices(
        self, center: tuple[int, int], height: int, width: int, seconds: Fraction | float = 0
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Palette indices `(height, width)` uint8 of the view centred on world `center` at time
        `seconds`, objects included, and the objects' states (see `draw_objects`)."""
        x0, y0 = int(center[0]) - width // 2, int(center[1]) - height // 2
        index = self.map_view(x0, y0, height, width)
        return index, self.draw_objects(index, x0, y0, self.object_positions(seconds))

    def render(
        self, center: tuple[int, int], height: int, width: int, seconds: Fraction | float = 0
    ) -> np.ndarray:
        """RGB uint8 `(height, width, 3)` of the view centred on `center` at time `seconds`."""
        return PALETTE[self.render_indices(center, height, width, seconds)[0]]


def _copies(offset: int, radius: int, extent: int, period: int) -> range:
    """Centres (in image pixels) of the periodic copies of an object that touch [0, extent)."""
    first = offset + period * math.ceil((-radius - offset) / period)
    return range(first, extent + radius, period)


def _blit(index: np.ndarray, sprite: np.ndarray, x: int, y: int, colour: int) -> bool:
    """Paint `sprite` (bool (s, s)) with top-left at image (x, y), clipped; True if any pixel lands."""
    height, width = index.shape
    s = sprite.shape[0]
    xa, xb, ya, yb = max(x, 0), min(x + s, width), max(y, 0), min(y + s, height)
    if xa >= xb or ya >= yb:
        return False
    mask = sprite[ya - y : yb - y, xa - x : xb - x]
    index[ya:yb, xa:xb][mask] = colour
    return bool(mask.any())


_SPRITES: dict[tuple[str, int], np.ndarray] = {}


def _sprite(shape: str, radius: int) -> np.ndarray:
    """Boolean mask (2r+1, 2r+1) of an object shape."""
    key = (shape, radius)
    if key not in _SPRITES:
        d = np.arange(-radius, radius + 1)
        dy, dx = np.abs(d)[:, None], np.abs(d)[None, :]
        if shape == "ball":
            mask = dx * dx + dy * dy <= radius * radius + radius
        elif shape == "box":
            mask = np.ones((2 * radius + 1, 2 * radius + 1), bool)
        elif shape == "diamond":
            mask = dx + dy <= radius
        elif shape == "triangle":  # apex up: half-width grows from 0 at the top to r at the bottom
            mask = 2 * dx <= d[:, None] + radius
        else:
            raise ValueError(f"shape must be one of {OBJECT_SHAPES}, got {shape!r}")
        mask.setflags(write=False)
        _SPRITES[key] = mask
    return _SPRITES[key]


# -- clips ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """A rendered clip: frames uint8 `(F, H, W, 3)`, the caption timeline, per-frame truth."""

    frames: np.ndarray
    captions: list[tuple[float, str]]
    truth: list[dict[str, Any]]
    script: Script
    fps: float
    seed: int

    def to_json(self) -> dict[str, Any]:
        """Everything but the pixels, JSON-ready."""
        num_frames, height, width, _ = self.frames.shape
        return {
            "seed": self.seed,
            "fps": self.fps,
            "num_frames": num_frames,
            "size": [height, width],
            "script": self.script.to_json(),
            "captions": [[t, text] for t, text in self.captions],
            "frames": self.truth,
        }


def render_clip(
    world: World,
    script: Script,
    size: int | tuple[int, int] = 64,
    fps: float = 30,
    num_frames: int | None = None,
) -> Clip:
    """Render `script` in `world` as frames `(F, H, W, 3)` uint8 with its captions and truth.

    `num_frames` defaults to round(script.seconds * fps); frame f shows time f / fps. Truth per
    frame: {"frame", "time", "camera": [x, y] view centre in world pixels, "objects": [...]}.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if height < 8 or width < 8:
        raise ValueError(f"size must be at least 8x8, got {size}")
    if num_frames is None:
        num_frames = max(1, round(script.seconds * fps))
    cameras = camera_path(script, num_frames, fps).tolist()  # (F, 2) view centres
    tracks = world.object_tracks(num_frames, fps)  # (F, K, 2)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    truth = []
    for f, (cx, cy) in enumerate(cameras):
        x0, y0 = cx - width // 2, cy - height // 2
        index = world.map_view(x0, y0, height, width)
        objects = world.draw_objects(index, x0, y0, tracks[f])
        frames[f] = PALETTE[index]
        truth.append({"frame": f, "time": f / fps, "camera": [cx, cy], "objects": objects})
    return Clip(frames, caption_timeline(script), truth, script, fps, world.seed)
