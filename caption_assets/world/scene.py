"""Procedural scenes with known truth: 1-3 coloured shapes on a plain or textured background.

Pure code (Pillow + numpy), no Dagster. Every scene is a small dataclass that is also its ground truth:
what is drawn is exactly what ``Scene`` says, object by object, so captions, filters and models can be
judged against it. Randomness comes from a ``random.Random`` seeded by (split, seed, index), so a
split's samples never overlap another split's and the same arguments give the same bytes.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "heart")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (245, 140, 25),
    "yellow": (240, 215, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "purple": (140, 55, 180),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
SIZES = ("small", "large")
# Slot centres (x, y) as fractions of the canvas; listed in caption order (left to right, top to bottom).
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.19, 0.5),
    "top": (0.5, 0.19),
    "centre": (0.5, 0.5),
    "bottom": (0.5, 0.81),
    "right": (0.81, 0.5),
}
# Half the object's box, as a fraction of the canvas side: as large as the slots allow without overlap,
# so a small shape is still ~13 px wide once a model resizes the image to 64 px.
HALF_EXTENT = {"small": 0.1, "large": 0.145}
# The wide world (issue 22, ``sample_scene(wide=True)``): each object's half-extent is drawn from this range, the
# layout may contract towards the centre, and the size word follows the drawn width ("large" from a quarter frame).
WIDE_HALF_EXTENT = (0.05, 0.375)
LARGE_FROM = 0.1225  # half-extent; between the classic small (0.1) and large (0.145)
TEXTURES = ("stripes", "speckle", "gradient")
WORDS = ("OPEN", "SALE", "CAFE", "HOTEL", "TAXI", "STOP", "MUSIC", "BOOKS", "PIZZA", "PARK")
FONT_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
WORD_CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str
    textured: bool
    side: int  # square canvas, pixels
    word: str | None = None
    word_corner: str | None = None
    seed: int = 0  # drives the pixel-level jitter (positions, shades, texture)
    tags: dict = field(default_factory=dict, compare=False)
    # The wide world only: each object's half-extent (``objects`` order, share of the side), the layout's spread
    # about the centre, and the background texture. ``None`` keeps the classic geometry.
    extents: tuple[float, ...] | None = None
    spread: float = 1.0
    texture: str = "stripes"

    def ordered(self) -> list[SceneObject]:
        order = list(POSITIONS)
        return sorted(self.objects, key=lambda o: order.index(o.position))

    def truth(self) -> dict:
        """Structured truth as plain Python (one row of a truth table)."""
        return {
            "objects": [asdict(o) for o in self.ordered()],
            "background": self.background,
            "textured": self.textured,
            "side": self.side,
            "word": self.word,
        }


def scene_rng(split: str, seed: int, index: int) -> random.Random:
    """A generator per sample: string seeds hash deterministically (sha512) across processes and runs."""
    return random.Random(f"world:{split}:{seed}:{index}")


def sample_scene(rng: random.Random, *, word_rate: float = 0.25, side: int | None = None, max_objects: int = 3, wide: bool = False,
                 size_bias: float = 1.0, max_half_extent: float = WIDE_HALF_EXTENT[1]) -> Scene:
    """Draw a scene: 1-3 objects in distinct slots, a background colour none of them has.

    ``wide``: objects from a tenth to three quarters of the frame wide, a layout that may contract towards the
    centre, and three background textures (``sample_wide_scene``, which ``size_bias`` and ``max_half_extent`` go
    to); the classic world draws two sizes."""
    n = rng.choices([1, 2, 3], weights=[0.4, 0.35, 0.25])[0] if max_objects >= 3 else rng.randint(1, max_objects)
    if wide:
        return sample_wide_scene(rng, n, word_rate=word_rate, side=side, size_bias=size_bias, max_half_extent=max_half_extent)
    slots = rng.sample(list(POSITIONS), n)
    objects = tuple(SceneObject(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(SIZES), p) for p in slots)
    background = rng.choice([c for c in COLOURS if c not in {o.colour for o in objects}])
    if side is None:
        side = rng.choice((96, 128, 160)) if rng.random() < 0.1 else rng.randrange(200, 513, 8)
    word = rng.choice(WORDS) if side >= 200 and rng.random() < word_rate else None
    return Scene(objects, background, rng.random() < 0.4, side, word, rng.choice(WORD_CORNERS) if word else None, rng.getrandbits(31))


def slot_centre(position: str, spread: float) -> tuple[float, float]:
    fx, fy = POSITIONS[position]
    return 0.5 + (fx - 0.5) * spread, 0.5 + (fy - 0.5) * spread


WIDE_JITTER = 0.01  # positional jitter of the wide world, per axis (share of the side)
WORD_BAND = 0.12  # the printed word's corner band: 3% padding + a 7.5%-of-side glyph, with room to spare
_GAP = 0.02  # free space kept between two objects' boxes and between a box and the frame, beyond the jitter


def sample_wide_scene(rng: random.Random, n: int, *, word_rate: float = 0.25, side: int | None = None, size_bias: float = 1.0,
                      max_half_extent: float = WIDE_HALF_EXTENT[1]) -> Scene:
    """The wide world: each object's half-extent is drawn uniformly from what the frame and the objects already
    placed leave (boxes never overlap, Chebyshev distance between slot centres), within ``WIDE_HALF_EXTENT``.
    The layout contracts by 0.6-1.0 towards the centre (several objects: 0.55-1.0, which makes most of the
    smallest ones); a lone object sits in the centre half the time, where it may fill three quarters of the
    frame. A printed word keeps the top and bottom bands (``WORD_BAND``) free of objects.

    ``size_bias`` > 1 skews each half-extent towards the small end (``lo + (room - lo) * u ** size_bias``): a
    training split's knob for the smallest objects, which the uniform draw makes rare (a lone object is under
    0.13 of the frame one time in twelve); < 1 skews them large. At 1 the draw, and so the world, is exactly the
    uniform one. ``max_half_extent`` above the world's 0.375 lets a training split draw objects wider than the
    widest the probes ask about (where a lone centred object has the room), so three quarters of the frame is not
    the edge of what a model saw."""
    if side is None:
        side = rng.choice((96, 128, 160)) if rng.random() < 0.1 else rng.randrange(200, 513, 8)
    word = rng.choice(WORDS) if side >= 200 and rng.random() < word_rate else None
    if n == 1:
        slots = ["centre" if rng.random() < 0.5 else rng.choice([p for p in POSITIONS if p != "centre"])]
        spread = rng.uniform(0.6, 1.0)
    else:
        slots = rng.sample(list(POSITIONS), n)
        spread = rng.uniform(0.55, 1.0)
    centres = [slot_centre(p, spread) for p in slots]
    band = WORD_BAND if word else 0.0
    lo, hi = WIDE_HALF_EXTENT[0], max_half_extent
    extents: list[float] = []
    for i, (cx, cy) in enumerate(centres):
        room = min(cx, 1 - cx, cy - band, 1 - band - cy) - WIDE_JITTER - _GAP
        for j, (ox, oy) in enumerate(centres):
            if j != i:  # objects still to come keep at least the smallest extent
                room = min(room, max(abs(cx - ox), abs(cy - oy)) - 2 * WIDE_JITTER - _GAP - (extents[j] if j < i else lo))
        top = max(lo, min(hi, room))
        extents.append(lo + (top - lo) * rng.random() ** size_bias)  # random.uniform's own formula at size_bias 1
    objects = tuple(SceneObject(rng.choice(SHAPES), rng.choice(list(COLOURS)), "large" if h >= LARGE_FROM else "small", p) for p, h in zip(slots, extents))
    background = rng.choice([c for c in COLOURS if c not in {o.colour for o in objects}])
    return Scene(objects, background, rng.random() < 0.4, side, word, rng.choice(WORD_CORNERS) if word else None, rng.getrandbits(31),
                 extents=tuple(round(h, 4) for h in extents), spread=round(spread, 4), texture=rng.choice(TEXTURES))


# ----------------------------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class Proportions:
    """How this renderer proportions its shapes, as shares of the half-extent ``r``. The world always draws with the
    defaults. A training split may draw each image with other ones (``vary_proportions``): another program's star is
    a little thinner, its diamond a little wider, and a model that only ever saw these exact proportions reads a
    tenth-of-the-frame star drawn elsewhere as a diamond (issue 22)."""

    square: float = 0.85  # half-side
    triangle_base: float = 0.8  # the base's height below the centre
    star_inner: float = 0.45  # inner radius of the five-pointed star
    cross_arm: float = 0.32  # half-thickness of each bar
    ring_width: float = 0.32  # outline width
    diamond_width: float = 0.7  # half-width (the half-height is r)
    tilt: float = 0.0  # degrees the shape is turned by (shrunk, if need be, to stay in its box)


@dataclass(frozen=True)
class ProportionRanges:
    """What ``vary_proportions`` draws each of ``Proportions`` from: ranges its shape's name still fits (a star with
    deep or shallow points, a thin or thick cross, a narrow or wide diamond; never one shape's proportions turned
    into another's)."""

    square: tuple[float, float] = (0.75, 0.95)
    triangle_base: tuple[float, float] = (0.65, 0.95)
    star_inner: tuple[float, float] = (0.35, 0.55)
    cross_arm: tuple[float, float] = (0.22, 0.42)
    ring_width: tuple[float, float] = (0.22, 0.45)
    diamond_width: tuple[float, float] = (0.55, 0.85)
    tilt: float = 0.0  # up to this many degrees either way


# A training split's ``variation`` names one. "turned" came after two other programs' shapes (matplotlib's markers and
# bench/sdf_probe.py's distance fields) showed what "proportions" left out: a square filling its whole box (their
# squares at three quarters of the frame are wider than any square the world drew, and the models gave those the
# background's colour), a diamond as wide as it is tall (a square on its corner: matplotlib's "D", Unicode's
# U+25C6), and shapes turned a little (15 degrees keeps a square a square; 45 would make it a diamond).
VARIATIONS: dict[str, ProportionRanges] = {
    "proportions": ProportionRanges(),
    "turned": ProportionRanges(square=(0.75, 1.0), diamond_width=(0.55, 1.0), tilt=15.0),
}


def vary_proportions(rng: random.Random, ranges: ProportionRanges = VARIATIONS["proportions"]) -> Proportions:
    """Proportions drawn from ``ranges`` (see ``ProportionRanges``); the tilt is drawn last, and only when it may
    turn, so the first variation's draws are what they always were."""
    p = Proportions(square=rng.uniform(*ranges.square), triangle_base=rng.uniform(*ranges.triangle_base), star_inner=rng.uniform(*ranges.star_inner),
                    cross_arm=rng.uniform(*ranges.cross_arm), ring_width=rng.uniform(*ranges.ring_width), diamond_width=rng.uniform(*ranges.diamond_width))
    return replace(p, tilt=rng.uniform(-ranges.tilt, ranges.tilt)) if ranges.tilt else p


WORLD_PROPORTIONS = Proportions()


def _star(cx: float, cy: float, r: float, points: int = 5, inner: float = WORLD_PROPORTIONS.star_inner) -> list[tuple[float, float]]:
    out = []
    for i in range(points * 2):
        rad = r if i % 2 == 0 else r * inner
        a = -math.pi / 2 + i * math.pi / points
        out.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return out


def _heart(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(64):
        t = 2 * math.pi * i / 64
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((cx + r * x / 16.5, cy - r * (y + 2.5) / 15.5))
    return pts


def _turned(points: list[tuple[float, float]], cx: float, cy: float, r: float, degrees: float) -> list[tuple[float, float]]:
    """``points`` turned about (cx, cy), then shrunk towards it if a corner left the box of half-side ``r``."""
    if not degrees:
        return points
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    turned = [((x - cx) * c - (y - cy) * s, (x - cx) * s + (y - cy) * c) for x, y in points]
    k = min(1.0, r / max(max(abs(dx), abs(dy)) for dx, dy in turned))
    return [(cx + dx * k, cy + dy * k) for dx, dy in turned]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple[int, int, int] | int,
               p: Proportions = WORLD_PROPORTIONS) -> None:
    """Draw one shape whose bounding box is about ``2r`` wide, centred on (cx, cy)."""
    box = (cx - r, cy - r, cx + r, cy + r)
    # Squares and crosses are polygons too, so they turn like the rest; Pillow fills an axis-aligned polygon on the
    # same pixels as the rectangles the world drew before (tests/test_world.py holds it to that).
    poly = lambda points: draw.polygon(_turned(points, cx, cy, r, p.tilt), fill=fill)  # noqa: E731
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        s = r * p.square
        poly([(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)])
    elif shape == "triangle":
        poly([(cx, cy - r), (cx + r, cy + r * p.triangle_base), (cx - r, cy + r * p.triangle_base)])
    elif shape == "star":
        poly(_star(cx, cy, r, inner=p.star_inner))
    elif shape == "cross":
        t = r * p.cross_arm
        arms = [(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t), (-r, t), (-r, -t), (-t, -t)]
        poly([(cx + dx, cy + dy) for dx, dy in arms])
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, int(round(r * p.ring_width))))
    elif shape == "diamond":
        poly([(cx, cy - r), (cx + r * p.diamond_width, cy), (cx, cy + r), (cx - r * p.diamond_width, cy)])
    elif shape == "heart":
        poly(_heart(cx, cy, r))
    else:
        raise ValueError(f"unknown shape {shape!r}")


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans Bold (Debian's fonts-dejavu-core) when present, else Pillow's bundled default font."""
    for path in FONT_PATHS:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def _shade(rng: random.Random, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c + rng.randint(-amount, amount)))) for c in rgb)  # type: ignore[return-value]


def object_geometry(scene: Scene) -> list[tuple[SceneObject, float, float, float]]:
    """(object, cx, cy, r) in pixels, with the scene's small positional jitter."""
    rng = random.Random(scene.seed)
    out = []
    for i, o in enumerate(scene.objects):
        fx, fy = slot_centre(o.position, scene.spread)
        j = 0.0075 if scene.extents is None else WIDE_JITTER
        jx, jy = rng.uniform(-j, j), rng.uniform(-j, j)
        half = HALF_EXTENT[o.size] if scene.extents is None else scene.extents[i]
        out.append((o, (fx + jx) * scene.side, (fy + jy) * scene.side, half * scene.side))
    return out


def _texture(scene: Scene, s: int) -> np.ndarray:
    """Additive background texture (int16, [s, s, 1]): small enough that the background keeps its colour name."""
    nrng = np.random.default_rng(scene.seed)
    kind = scene.texture if scene.extents is not None else "stripes"
    if kind == "speckle":  # blotches of a few pixels plus grain
        block = int(nrng.integers(4, 13))
        blotch = np.kron(nrng.normal(0, 7, (s // block + 1, s // block + 1)), np.ones((block, block)))[:s, :s]
        return np.rint(blotch + nrng.normal(0, 5, (s, s))).astype(np.int16)[..., None]
    if kind == "gradient":  # a soft light-to-dark ramp in a random direction
        a = nrng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:s, 0:s] / s - 0.5
        return np.rint(24 * (xx * np.cos(a) + yy * np.sin(a)) + nrng.normal(0, 3, (s, s))).astype(np.int16)[..., None]
    period = nrng.integers(6, 16)
    stripes = ((np.arange(s)[:, None] + np.arange(s)[None, :]) // period % 2).astype(np.int16) * 18 - 9
    return stripes[..., None] + nrng.integers(-8, 9, size=(s, s, 1), dtype=np.int16)


def render(scene: Scene, proportions: Proportions = WORLD_PROPORTIONS) -> Image.Image:
    """The scene as an RGB image (objects never overlap: slots are far enough apart). ``proportions``: a training
    split's knob (``vary_proportions``); the world renders with its own."""
    rng = random.Random(scene.seed ^ 0x5EED)
    s = scene.side
    bg = _shade(rng, COLOURS[scene.background], 10)
    im = Image.new("RGB", (s, s), bg)
    if scene.textured:
        arr = np.asarray(im, dtype=np.int16).copy() + _texture(scene, s)
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for o, cx, cy, r in object_geometry(scene):
        draw_shape(draw, o.shape, cx, cy, r, _shade(rng, COLOURS[o.colour], 12 if scene.extents is None else 20), proportions)
    if scene.word:
        size = max(12, int(s * 0.075))
        f = font(size)
        l, t, r_, b = draw.textbbox((0, 0), scene.word, font=f)
        w, h = r_ - l, b - t
        pad = int(s * 0.03)
        x = pad if scene.word_corner.endswith("left") else s - pad - w  # type: ignore[union-attr]
        y = pad if scene.word_corner.startswith("top") else s - pad - h  # type: ignore[union-attr]
        ink = (255, 255, 255) if sum(COLOURS[scene.background]) < 380 else (0, 0, 0)
        draw.text((x - l, y - t), scene.word, font=f, fill=ink)
    return im


def object_masks(scene: Scene) -> list[np.ndarray]:
    """Boolean mask of each object (in ``scene.objects`` order), drawn alone: for checking the truth."""
    out = []
    for o, cx, cy, r in object_geometry(scene):
        m = Image.new("L", (scene.side, scene.side), 0)
        draw_shape(ImageDraw.Draw(m), o.shape, cx, cy, r, 255)
        out.append(np.asarray(m) > 0)
    return out


def nearest_colour(rgb: np.ndarray) -> str:
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], dtype=np.float64)
    return names[int(np.argmin(((palette - rgb[None, :]) ** 2).sum(axis=1)))]


def encode(im: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": quality} if fmt in ("JPEG", "WEBP") else {"optimize": False}))
    return buf.getvalue()
