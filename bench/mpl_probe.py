"""A third renderer for the scale probe: matplotlib's own marker shapes, drawn by its Agg backend.

``bench/verdict_probe.py``'s scikit-image renderer redraws the world's shapes in proportions close to the world's
(a star's inner radius 0.42 against 0.45). This one takes every shape from matplotlib's marker set instead, in
its own proportions, which nothing in the world or its training copies: ``*`` (inner radius 0.38), ``D`` (a
square on its corner: a diamond as wide as it is tall, where the world's is 0.7 as wide), ``P`` (the filled plus,
arms a third of its width), ``^``, ``s``, ``o``; a heart is DejaVu Sans's U+2665 glyph as a path, a ring an
``Annulus`` patch a quarter of its radius thick. Anti-aliased, on a background of smooth blotches (not the
world's stripes or speckle), colours jittered, JPEG at quality 60-90.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image

MARKERS = {"circle": "o", "square": "s", "triangle": "^", "star": "*", "cross": "P", "diamond": "D"}


@lru_cache(maxsize=None)
def _unit_path(shape: str):
    """The shape's outline, scaled and centred so its bounding box is [-1, 1] on its longer side."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.markers import MarkerStyle
    from matplotlib.path import Path as MplPath
    from matplotlib.textpath import TextPath

    if shape == "heart":
        path = TextPath((0, 0), "\u2665", size=1, prop=FontProperties(family="DejaVu Sans"))
    else:
        style = MarkerStyle(MARKERS[shape])
        path = style.get_path().transformed(style.get_transform())
    box = path.get_extents()  # of the curves themselves, not of their Bezier control points
    lo, hi = np.array([box.x0, box.y0]), np.array([box.x1, box.y1])
    return MplPath((path.vertices - (lo + hi) / 2) / ((hi - lo).max() / 2), path.codes)


def draw_matplotlib(scene, rng: np.random.Generator, width: float, side: int = 192) -> Image.Image:
    """The scene's one object, centred, ``width`` of the frame wide, drawn by matplotlib; a decoded JPEG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Annulus, PathPatch
    from matplotlib.transforms import Affine2D
    from scipy.ndimage import gaussian_filter

    from caption_assets.world.scene import COLOURS, encode

    jitter = lambda rgb: np.clip(np.array(rgb, float) + rng.integers(-20, 21, 3), 0, 255) / 255  # noqa: E731
    blotches = gaussian_filter(rng.normal(0, 1, (side, side)), sigma=side / 24)
    background = np.clip(jitter(COLOURS[scene.background]) + blotches[..., None] / blotches.std() * 0.035, 0, 1)
    fig = plt.figure(figsize=(side / 100, side / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, side)
    ax.set_ylim(0, side)
    ax.axis("off")
    ax.imshow(background, extent=(0, side, 0, side), interpolation="bilinear")
    o = scene.objects[0]
    r = width * side / 2
    cx, cy = (0.5 + rng.uniform(-0.02, 0.02, 2)) * side
    colour = jitter(COLOURS[o.colour])
    if o.shape == "ring":
        ax.add_patch(Annulus((cx, cy), r, r * 0.25, facecolor=colour, edgecolor="none"))
    else:
        ax.add_patch(PathPatch(_unit_path(o.shape).transformed(Affine2D().scale(r).translate(cx, cy)), facecolor=colour, edgecolor="none"))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    im = Image.open(buf).convert("RGB").resize((side, side))
    return Image.open(io.BytesIO(encode(im, "JPEG", quality=int(rng.integers(60, 91))))).convert("RGB")
