"""A fourth renderer for the scale probe: shapes as signed distance fields, evaluated in numpy.

Nothing here rasterises a polygon or a glyph. Each shape is a distance function (Inigo Quilez's 2-D formulas:
circle, rounded box, equilateral triangle, five-pointed star, cross, annulus, rhombus, heart) evaluated at every
pixel centre, and its coverage of the pixel comes from the distance (one pixel of analytic anti-aliasing). Each image
draws its own proportions from ranges around what the other renderers use (a star's inner radius 0.36-0.5, a
diamond 0.6-1.0 as wide as it is tall, a cross's bars 0.24-0.4 of the half-extent either side of the axis, a ring
0.18-0.4 of it thick, a square's corners rounded up to 0.15 of it), turns the shape by up to 10 degrees, lights the whole picture unevenly (a soft directional light and a
vignette, a few percent each, plus grain), and goes through WebP at quality 50-90, which no training image went
through. Written, and its ranges fixed, before any model was measured on it or trained after it (issue 22).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

SQ3 = np.sqrt(3.0)


def _length(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sqrt(x * x + y * y)


def _box(x, y, bx: float, by: float, rounding: float = 0.0):
    qx, qy = np.abs(x) - (bx - rounding), np.abs(y) - (by - rounding)
    return _length(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - rounding


def _triangle(x, y):  # equilateral, side 2, pointing up (y up)
    x = np.abs(x) - 1.0
    y = y + 1.0 / SQ3
    flip = x + SQ3 * y > 0
    x, y = np.where(flip, (x - SQ3 * y) / 2, x), np.where(flip, (-SQ3 * x - y) / 2, y)
    x = x - np.clip(x, -2.0, 0.0)
    return -_length(x, y) * np.sign(y)


def _star5(x, y, inner: float):  # outer radius 1, inner radius ``inner``, a point up (y up)
    k1x, k1y = 0.809016994375, -0.587785252292
    x = np.abs(x)
    d = 2 * np.maximum(k1x * x + k1y * y, 0)
    x, y = x - d * k1x, y - d * k1y
    d = 2 * np.maximum(-k1x * x + k1y * y, 0)
    x, y = x + d * k1x, y - d * k1y
    x = np.abs(x)
    y = y - 1.0
    bax, bay = inner * -k1y, inner * k1x - 1.0
    h = np.clip((x * bax + y * bay) / (bax * bax + bay * bay), 0.0, 1.0)
    return _length(x - bax * h, y - bay * h) * np.sign(y * bax - x * bay)


def _rhombus(x, y, bx: float, by: float):
    x, y = np.abs(x), np.abs(y)
    h = np.clip(((bx - 2 * x) * bx - (by - 2 * y) * by) / (bx * bx + by * by), -1.0, 1.0)
    d = _length(x - 0.5 * bx * (1 - h), y - 0.5 * by * (1 + h))
    return d * np.sign(x * by + y * bx - bx * by)


def _heart(x, y):  # tip at the origin, lobes up to y ~ 1.1
    x = np.abs(x)
    upper = _length(x - 0.25, y - 0.75) - np.sqrt(2.0) / 4
    m = 0.5 * np.maximum(x + y, 0.0)
    lower = np.sqrt(np.minimum((x * x + (y - 1) ** 2), (x - m) ** 2 + (y - m) ** 2)) * np.sign(x - y)
    return np.where(y + x > 1.0, upper, lower)


def shape_sdf(shape: str, rng: np.random.Generator) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The shape's distance function in its own units (y up), with this image's proportions drawn from ``rng``."""
    if shape == "circle":
        return lambda x, y: _length(x, y) - 1.0
    if shape == "ring":
        w = rng.uniform(0.18, 0.4)
        return lambda x, y: np.abs(_length(x, y) - (1 - w / 2)) - w / 2
    if shape == "square":
        rounding = rng.uniform(0.0, 0.15)
        return lambda x, y: _box(x, y, 1.0, 1.0, rounding)
    if shape == "triangle":
        return _triangle
    if shape == "star":
        inner = rng.uniform(0.36, 0.5)
        return lambda x, y: _star5(x, y, inner)
    if shape == "cross":
        arm = rng.uniform(0.24, 0.4)  # half-thickness of each bar, as a share of the half-extent
        return lambda x, y: np.minimum(_box(x, y, 1.0, arm), _box(x, y, arm, 1.0))
    if shape == "diamond":
        w = rng.uniform(0.6, 1.0)
        return lambda x, y: _rhombus(x, y, w, 1.0)
    if shape == "heart":
        return _heart
    raise ValueError(f"unknown shape {shape!r}")


def _unit_box(sdf) -> tuple[float, float, float]:
    """(centre x, centre y, half the longer side) of the shape's inside, measured on a fine grid."""
    t = np.linspace(-1.6, 1.6, 641)
    x, y = np.meshgrid(t, t)
    inside = sdf(x, y) <= 0
    xs, ys = x[inside], y[inside]
    return (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2, max(xs.max() - xs.min(), ys.max() - ys.min()) / 2


def draw_sdf(scene, rng: np.random.Generator, width: float, side: int = 192, tilt: float = 10.0) -> Image.Image:
    """The scene's one object, centred, its unturned bounding box ``width`` of the frame wide; a decoded WebP."""
    from caption_assets.world.scene import COLOURS

    o = scene.objects[0]
    jitter = lambda rgb: np.clip(np.array(rgb, float) + rng.integers(-20, 21, 3), 0, 255)  # noqa: E731
    sdf = shape_sdf(o.shape, rng)
    ux, uy, uh = _unit_box(sdf)
    r = width * side / 2
    cx, cy = (0.5 + rng.uniform(-0.02, 0.02, 2)) * side
    a = np.deg2rad(rng.uniform(-tilt, tilt))
    py, px = np.mgrid[0:side, 0:side] + 0.5
    dx, dy = px - cx, cy - py  # y up
    rx, ry = dx * np.cos(a) + dy * np.sin(a), -dx * np.sin(a) + dy * np.cos(a)
    d = sdf(ux + rx / r * uh, uy + ry / r * uh) * r / uh  # in pixels
    cover = np.clip(0.5 - d, 0.0, 1.0)[..., None]
    im = jitter(COLOURS[scene.background]) * (1 - cover) + jitter(COLOURS[o.colour]) * cover
    u, v = (px - side / 2) / side, (py - side / 2) / side
    light_dir = rng.uniform(0, 2 * np.pi)
    light = 1 + 0.05 * (u * np.cos(light_dir) + v * np.sin(light_dir)) * 2 - 0.12 * (u * u + v * v)
    im = im * light[..., None] + rng.normal(0, 4, (side, side, 1))
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(im), 0, 255).astype(np.uint8)).save(buf, "WEBP", quality=int(rng.integers(50, 91)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
