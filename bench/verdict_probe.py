"""Does the demo's verdict hold on pictures the world did not draw? curation_eval's training sets, tested twice.

    python bench/verdict_probe.py [--lake data/lake] [--n 500]

The training sets come from what the lake holds (run ``caption-assets demo`` first). Each (set, seed) model is
tested on the world's test split (what ``curation_eval`` reports) and on a probe of the same scenes drawn by
another code path: scikit-image's ``skimage.draw`` rasterisers, supersampled 3x and downscaled with
anti-aliasing, each object's half-size drawn from a range (small 0.07-0.11, large 0.125-0.17 of the side; the
world draws 0.1 and 0.145), its colour jittered, a speckle texture instead of stripes, no printed word, and JPEG
at quality 75. Queries are the scenes' held-out phrasing (and canonical, for the style gap). Prints both verdicts side by side.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _shape_mask(shape: str, cx: float, cy: float, r: float, side: int) -> np.ndarray:
    from skimage.draw import disk, polygon

    mask = np.zeros((side, side), bool)

    def poly(points: list[tuple[float, float]]) -> None:
        xs, ys = zip(*points)
        rr, cc = polygon(np.array(ys), np.array(xs), mask.shape)
        mask[rr, cc] = True

    if shape == "circle":
        mask[disk((cy, cx), r, shape=mask.shape)] = True
    elif shape == "ring":
        mask[disk((cy, cx), r, shape=mask.shape)] = True
        mask[disk((cy, cx), r * 0.55, shape=mask.shape)] = False
    elif shape == "square":
        poly([(cx - r * 0.85, cy - r * 0.85), (cx + r * 0.85, cy - r * 0.85), (cx + r * 0.85, cy + r * 0.85), (cx - r * 0.85, cy + r * 0.85)])
    elif shape == "diamond":
        poly([(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)])
    elif shape == "triangle":
        poly([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)])
    elif shape == "cross":
        w = r * 0.33
        poly([(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy + r), (cx - w, cy + r)])
        poly([(cx - r, cy - w), (cx + r, cy - w), (cx + r, cy + w), (cx - r, cy + w)])
    elif shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.42)
        poly(list(zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles))))
    elif shape == "heart":
        t = np.linspace(0, 2 * np.pi, 64)  # the parametric heart curve, not the world's two-discs-and-a-triangle
        x, y = 16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        poly(list(zip(cx + x * r / 17, cy + y * r / 17)))
    else:
        raise ValueError(shape)
    return mask


def draw_probe(scene, rng: np.random.Generator, side: int = 192, width: float | None = None) -> Image.Image:
    """The scene by another code path (see the module docstring), as a decoded JPEG. ``width``: every object's
    width as a share of the frame, centred (the scale probe of ``bench/probe_models.py``)."""
    from skimage.transform import resize

    from caption_assets.world.scene import COLOURS, POSITIONS

    big = side * 3
    jitter = lambda rgb: np.clip(np.array(rgb, float) + rng.integers(-22, 23, 3), 0, 255)  # noqa: E731
    canvas = np.empty((big, big, 3), float)
    canvas[:] = jitter(COLOURS[scene.background])
    canvas += rng.normal(0, 7, (big, big, 1)) + np.kron(rng.normal(0, 6, (big // 12, big // 12, 1)), np.ones((12, 12, 1)))  # speckle
    for o in scene.objects:
        fx, fy = POSITIONS[o.position]
        r = (width / 2 if width else rng.uniform(*{"small": (0.07, 0.11), "large": (0.125, 0.17)}[o.size])) * big
        if width:
            fx = fy = 0.5
        cx, cy = (fx + rng.uniform(-0.02, 0.02)) * big, (fy + rng.uniform(-0.02, 0.02)) * big
        canvas[_shape_mask(o.shape, cx, cy, r, big)] = jitter(COLOURS[o.colour])
    small = resize(np.clip(canvas, 0, 255) / 255, (side, side), anti_aliasing=True)
    buf = io.BytesIO()
    Image.fromarray((small * 255).astype(np.uint8)).save(buf, "JPEG", quality=75)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def probe_testset(px: int, n: int, n_zeroshot: int, seed: int = 0):
    """curation_eval's test set (same scenes, same queries), drawn by ``draw_probe`` and without printed words."""
    from caption_assets.curation_eval.testset import build_testset

    rng = np.random.default_rng(20261204)
    return build_testset(px, n, n_zeroshot, seed, draw=lambda s: draw_probe(s, rng), adapt=lambda s: replace(s, word=None, word_corner=None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", type=Path, default=ROOT / "data" / "lake")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--save", type=Path, default=None, help="also write a few probe images here (PNG), to look at")
    args = ap.parse_args()
    from caption_assets.assets.evaluation import read_lake
    from caption_assets.curation_eval.headline import BASELINES, pts
    from caption_assets.curation_eval.intervals import Bootstrap, differences
    from caption_assets.curation_eval.metrics import COMPANION, HEADLINE
    from caption_assets.curation_eval.recipe import Recipe
    from caption_assets.curation_eval.run import decode_images, evaluate_training_sets
    from caption_assets.curation_eval.testset import build_testset
    from caption_assets.curation_eval.training_sets import TRAINING_SETS
    from caption_assets.ingest import POINTER_COLUMNS
    from resources import LakeStorage

    recipe = Recipe()
    frames = read_lake(LakeStorage(root=str(args.lake)))
    pixels, ok = decode_images(frames.raw.select(POINTER_COLUMNS).rows(), recipe.image_px, 2)
    ingested = frames.raw.filter(pl.Series(ok)).select("uid", "caption")
    t0 = time.perf_counter()
    tests = {"world test split": build_testset(recipe.image_px, args.n, 400), "probe (skimage.draw)": probe_testset(recipe.image_px, args.n, 400)}
    print(f"test sets rendered in {time.perf_counter() - t0:.0f}s")
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        from caption_assets.curation_eval.testset import RETRIEVAL_OFFSET
        from caption_assets.world.evaluate import as_crawled, test_scenes

        for i, s in enumerate(test_scenes(6, offset=RETRIEVAL_OFFSET)):
            draw_probe(replace(s, word=None, word_corner=None), rng).save(args.save / f"probe-{i}.png")
            as_crawled(s).save(args.save / f"world-{i}.png")
    metrics = [HEADLINE, COMPANION, HEADLINE + "_canonical", "zeroshot_colour_acc", "zeroshot_shape_acc"]
    for name, test in tests.items():
        runs = evaluate_training_sets(ingested, pixels[ok], frames.scored, frames.manifest, test, recipe, [0, 1, 2], TRAINING_SETS, 2, log=lambda _: None)
        diffs = differences(runs, "curated", list(BASELINES), metrics, Bootstrap())
        cur = runs.filter(pl.col("training_set") == "curated")
        print(f"\n{name}: curated {HEADLINE} {cur[HEADLINE].mean() * 100:.1f}%, {COMPANION} {cur[COMPANION].mean() * 100:.1f}%")
        for metric in metrics:
            cells = [f"{b} {pts(*d)}" for b in BASELINES
                     if (row := diffs.filter((pl.col("baseline") == b) & (pl.col("metric") == metric))).height
                     and (d := (row["diff"][0], row["ci_lo"][0], row["ci_hi"][0]))]
            print(f"  curated - {metric:22s} " + "; ".join(cells))


if __name__ == "__main__":
    main()
