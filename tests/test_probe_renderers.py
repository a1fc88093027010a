"""The scale probe's renderers draw what their scene says: the object's colour, centred, at the asked width.

The probes measure the demo models off the world's renderer (``bench/probe_models.py``); a renderer that drew the
wrong size or colour would make every figure there wrong while looking like a model's fault.
"""

from __future__ import annotations

import random
from dataclasses import replace
from functools import partial

import numpy as np
import pytest

from bench.probe_models import RENDERERS, probe_drawer
from caption_assets.world.scene import COLOURS, SHAPES, nearest_colour, sample_scene


def _renderers():
    # the distance fields and the glyphs turn a shape by up to 10 and 8 degrees, which widens its box; the width is
    # asked of the unturned one
    return {r: partial(probe_drawer(r), tilt=0.0) if r in ("sdf", "glyph") else probe_drawer(r) for r in RENDERERS}


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("width", [0.1, 0.35, 0.75])
def test_a_probe_renderer_draws_one_centred_object_at_the_asked_width(renderer: str, width: float):
    draw = _renderers()[renderer]
    base = sample_scene(random.Random(3), max_objects=1, word_rate=0.0)
    rng = np.random.default_rng(0)
    for i, shape in enumerate(SHAPES):
        colour = list(COLOURS)[i]
        background = list(COLOURS)[(i + 3) % len(COLOURS)]
        scene = replace(base, objects=(replace(base.objects[0], shape=shape, colour=colour),), background=background)
        px = np.asarray(draw(scene, rng, width=width), dtype=np.float64)
        assert px.shape == (192, 192, 3)
        bg = np.array(COLOURS[background], float)
        ink = np.abs(px - bg).max(axis=2) > 60  # far from the background: the object (and not the texture or JPEG)
        ys, xs = np.nonzero(ink)
        extent = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
        # scikit-image draws the world's proportions: a square 0.85 of the box, a star's widest chord 0.95 of it
        drawn = width * 192 * {("skimage", "square"): 0.85, ("skimage", "star"): 0.95}.get((renderer, shape), 1.0)
        assert abs(extent - drawn) <= max(5, 0.06 * drawn), (renderer, shape, extent)  # + JPEG and anti-aliasing fringes
        off = 4 + 0.1 * width * 96  # the renderers' jitter (2% of the side) + a star's box sits a tenth of r high
        assert abs((xs.min() + xs.max()) / 2 - 96) <= off and abs((ys.min() + ys.max()) / 2 - 96) <= off, (renderer, shape)
        core = ink & (np.abs(px - np.array(COLOURS[colour], float)).max(axis=2) < 80)
        assert core.sum() >= 0.3 * ink.sum(), (renderer, shape)  # the rest: anti-aliased edges
        assert nearest_colour(np.median(px[core], axis=0)) == colour
        assert nearest_colour(np.median(px[~ink], axis=0)) == background


def test_the_distance_field_renderer_turns_and_reproportions_its_shapes():
    """Each draw has its own proportions (a diamond from 0.6 to 1.0 as wide as it is tall, never wider) and its own turn
    (a square's box is wider than its side once it is turned)."""
    from bench.sdf_probe import draw_sdf

    base = sample_scene(random.Random(3), max_objects=1, word_rate=0.0)
    scene = replace(base, objects=(replace(base.objects[0], shape="diamond", colour="white"),), background="black")
    widths = []
    for seed in range(12):
        ink = np.asarray(draw_sdf(scene, np.random.default_rng(seed), width=0.6, tilt=0.0), dtype=np.float64).max(axis=2) > 135
        ys, xs = np.nonzero(ink)
        widths.append((xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1))
    assert 0.55 <= min(widths) < 0.75 and 0.85 < max(widths) <= 1.05, widths
    square = replace(scene, objects=(replace(scene.objects[0], shape="square"),))
    turned = [np.asarray(draw_sdf(square, np.random.default_rng(seed), width=0.6), dtype=np.float64).max(axis=2) > 135 for seed in range(6)]
    boxes = [(np.nonzero(t)[1].max() - np.nonzero(t)[1].min() + 1) for t in turned]
    assert max(boxes) > 0.6 * 192 * 1.05  # a square turned by more than ~3 degrees has a wider box than its side
