"""The procedural world: deterministic, truthful, noisy at the configured rates, and kept apart from the crawl."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from caption_assets.shards import discover_shards
from caption_assets.world.captions import (
    canonical, hallucinated, mentioned_objects, names_every_object, paraphrase, partial, truth_objects, wrong_attribute,
)
from caption_assets.world.crawl import CrawlSpec, CrawlWriter, NoiseRates, preferences, shard_plan, write_crawl
from caption_assets.world.scene import COLOURS, POSITIONS, SHAPES, nearest_colour, object_masks, render, sample_scene, scene_rng


def test_same_seed_same_bytes_and_truth(tmp_path: Path):
    spec = lambda: CrawlSpec(shard_plan(5, 12), seed=3)  # noqa: E731
    a, ta = write_crawl(tmp_path / "a", spec())
    b, tb = write_crawl(tmp_path / "b", spec())
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    assert ta.equals(tb)
    other = write_crawl(tmp_path / "c", CrawlSpec(shard_plan(5, 12), seed=4))[1]
    assert not other.select("alt_text").equals(ta.select("alt_text"))


def test_truth_sits_beside_the_crawl_never_in_it(tmp_path: Path):
    crawl, truth = write_crawl(tmp_path, CrawlSpec(shard_plan(5, 10), seed=1))
    assert (tmp_path / "truth.parquet").exists() and not list(crawl.rglob("truth*"))
    assert sorted(discover_shards(crawl)) == sorted(name for name, _, _ in shard_plan(5, 10))
    # every sample the shards hold has exactly one truth row: 5 x 10 drawn + the hostile members
    assert truth["uid"].is_unique().all()
    assert truth.filter(pl.col("noise") != "broken").height == 50
    assert set(truth.filter(pl.col("noise") == "broken")["expected_quarantine"]) >= {"corrupt_image", "truncated_image", "caption_not_utf8", "download_failed", "empty_image"}


@pytest.mark.parametrize("index", range(40))
def test_drawn_objects_match_their_truth(index: int):
    scene = sample_scene(scene_rng("unit", 0, index))
    pixels = np.asarray(render(scene), dtype=np.float64)
    masks = object_masks(scene)
    assert len(masks) == len(scene.objects)
    union = np.zeros(masks[0].shape, bool)
    for obj, mask in zip(scene.objects, masks):
        assert mask.sum() > 20
        assert not (mask & union).any(), "objects overlap"
        union |= mask
        assert nearest_colour(np.median(pixels[mask], axis=0)) == obj.colour  # the dominant colour inside the mask
        ys, xs = np.nonzero(mask)
        fx, fy = POSITIONS[obj.position]
        assert abs(xs.mean() / scene.side - fx) < 0.08 and abs(ys.mean() / scene.side - fy) < 0.08
    assert nearest_colour(np.median(pixels[~union], axis=0)) == scene.background
    assert scene.background not in {o.colour for o in scene.objects}


def test_world_vocabulary_is_as_wide_as_promised():
    scenes = [sample_scene(scene_rng("unit", 1, i)) for i in range(400)]
    assert len(SHAPES) >= 8 and len(COLOURS) >= 8
    assert {o.shape for s in scenes for o in s.objects} == set(SHAPES)
    assert {o.colour for s in scenes for o in s.objects} == set(COLOURS)
    assert {len(s.objects) for s in scenes} == {1, 2, 3}
    assert min(s.side for s in scenes) >= 96 and max(s.side for s in scenes) <= 512
    assert any(s.word for s in scenes) and any(s.textured for s in scenes)


def test_captions_parse_back_to_their_objects():
    rng = random.Random(0)
    for i in range(200):
        scene = sample_scene(scene_rng("unit", 2, i))
        assert names_every_object(canonical(scene), scene.objects)
        assert names_every_object(paraphrase(scene, rng), scene.objects)
        wrong, altered, kind = wrong_attribute(scene, rng)
        assert not names_every_object(wrong, scene.objects) and names_every_object(wrong, altered.objects)
        assert hallucinated(wrong, scene.objects) == 1
        assert sum(mentioned_objects(partial(scene, rng)).values()) <= 1
    assert mentioned_objects("two small red circles left of a large blue star on a green background") == Counter({("red", "circle"): 2, ("blue", "star"): 1})
    assert truth_objects([{"colour": "red", "shape": "ring"}]) == Counter({("red", "ring"): 1})


def test_each_noise_kind_appears_at_its_rate():
    rates = NoiseRates(ood_photo=0.0)
    w = CrawlWriter(CrawlSpec([], seed=11, rates=rates, web_texts=[("Assistance Dogs 1st Place Winner", "http://example.com/x.jpg")]))
    n = 2000
    for i in range(n):
        w.draw("s.tar", f"{i:06d}", "JPEG")
    got = w.truth_frame().group_by("noise").len()
    frac = dict(zip(got["noise"], (got["len"] / n).to_list()))
    names, weights = rates.kinds()
    expected = {k: v / sum(weights) for k, v in zip(names, weights)}
    frac["correct"] = frac.get("correct", 0) + frac.pop("text_in_image", 0)  # correct pairs whose image shows a word
    for kind, rate in expected.items():
        assert abs(frac.get(kind, 0.0) - rate) < 0.03, (kind, frac.get(kind), rate)


def test_duplicates_share_a_group_with_their_original():
    w = CrawlWriter(CrawlSpec([], seed=5))
    for i in range(300):
        w.draw("s.tar", f"{i:06d}", "JPEG")
    t = w.truth_frame()
    dups = t.filter(pl.col("noise").is_in(["exact_duplicate", "near_duplicate"]))
    assert dups.height > 20
    originals = t.join(dups.select(pl.col("duplicate_of").alias("uid"), pl.col("duplicate_group").alias("g")), on="uid")
    assert (originals["duplicate_group"] == originals["g"]).all()


def test_preferences_put_the_true_caption_first():
    w = CrawlWriter(CrawlSpec([], seed=2))
    for i in range(200):
        w.draw("s.tar", f"{i:06d}", "JPEG")
    truth = w.truth_frame()
    prefs = list(preferences(truth, fraction=1.0))
    clean = dict(zip(truth["uid"], truth["clean_caption"]))
    assert len(prefs) == truth.filter(pl.col("noise").is_in(["correct", "text_in_image"])).height
    assert all(p["captions"][p["preferred"]] == clean[p["image_key"]] for p in prefs)
    assert {p["preferred"] for p in prefs} == {0, 1, 2, 3}  # the winner's position is shuffled


@pytest.mark.skipif(__import__("shutil").which("tesseract") is None, reason="Tesseract is not installed")
def test_the_ocr_expert_reads_only_the_printed_word():
    """Precision over recall: what the expert reports is the printed word; shapes alone read as nothing.
    (Tesseract finds the word in about a third of these scenes at the demo's confidence floor.)"""
    from dataclasses import replace

    from caption_assets.world.scene import encode
    from resources.experts import ocr_image

    scenes = [sample_scene(scene_rng("ocr", 0, i), word_rate=1.0, side=448) for i in range(20)]
    read = [ocr_image(encode(render(s), "PNG"), 85.0, "eng")[0] for s in scenes]
    assert all(r in (None, s.word) for r, s in zip(read, scenes)), read
    assert sum(r == s.word for r, s in zip(read, scenes)) >= 5
    blank = [ocr_image(encode(render(replace(s, word=None)), "PNG"), 85.0, "eng")[0] for s in scenes]
    assert blank == [None] * len(scenes)


# ---------------------------------------------------------------------------------------- the wide world (issue 22)


def _object_box(mask: np.ndarray, side: int) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return xs.min() / side, ys.min() / side, (xs.max() + 1) / side, (ys.max() + 1) / side


@pytest.mark.parametrize(("index", "size_bias", "reach"), [(i, 1.0, 0.375) for i in range(60)] + [(i, 3.0, 0.375) for i in range(20)]
                         + [(i, 0.5, 0.42) for i in range(20)])
def test_wide_scenes_are_drawn_as_their_truth_says(index: int, size_bias: float, reach: float):
    from caption_assets.world.scene import LARGE_FROM, WORD_BAND, slot_centre

    scene = sample_scene(scene_rng("unit-wide", 0, index), wide=True, word_rate=0.5, size_bias=size_bias, max_half_extent=reach)
    pixels = np.asarray(render(scene), dtype=np.float64)
    union = np.zeros((scene.side, scene.side), bool)
    for obj, half, mask in zip(scene.objects, scene.extents, object_masks(scene)):
        assert not (mask & union).any(), "objects overlap"
        union |= mask
        x0, y0, x1, y1 = _object_box(mask, scene.side)
        assert min(x0, y0) >= 0.02 and max(x1, y1) <= 0.98, "an object touches the frame"
        if scene.word:  # the word's corner bands stay free
            assert y0 >= WORD_BAND - 0.02 and y1 <= 1 - WORD_BAND + 0.02
        assert (obj.size == "large") == (half >= LARGE_FROM)
        assert nearest_colour(np.median(pixels[mask], axis=0)) == obj.colour
        ys, xs = np.nonzero(mask)
        fx, fy = slot_centre(obj.position, scene.spread)
        assert abs(xs.mean() / scene.side - fx) < 0.09 and abs(ys.mean() / scene.side - fy) < 0.09
    assert nearest_colour(np.median(pixels[~union], axis=0)) == scene.background


def test_the_wide_world_spans_a_tenth_to_three_quarters_of_the_frame():
    scenes = [sample_scene(scene_rng("unit-wide", 1, i), wide=True) for i in range(1500)]
    widths = np.array([2 * h for s in scenes for h in s.extents])
    assert 0.1 <= widths.min() < 0.105 and 0.7 < widths.max() <= 0.75
    counts = np.histogram(widths, bins=[0.1, 0.2, 0.35, 0.5, 0.75])[0]
    assert (counts >= 40).all(), counts  # every band of the probe's scales is drawn, the widest included
    assert {s.texture for s in scenes if s.textured} == {"stripes", "speckle", "gradient"}
    assert {len(s.objects) for s in scenes} == {1, 2, 3}
    classic = sample_scene(scene_rng("unit", 0, 3))
    assert classic.extents is None and classic == sample_scene(scene_rng("unit", 0, 3), wide=False)


def test_a_size_bias_skews_the_wide_world_small_within_its_range():
    """A training split's knob (``sample_wide_scene``'s ``size_bias``): the same draws, each object smaller or equal,
    so the smallest band the probe measures (a tenth of the frame) is drawn several times as often."""
    from caption_assets.world.scene import WIDE_HALF_EXTENT

    lone = [[sample_scene(scene_rng("unit-bias", 0, i), wide=True, max_objects=1, size_bias=b) for i in range(600)] for b in (1.0, 3.0)]
    what = lambda s: ([(o.shape, o.colour, o.position) for o in s.objects], s.background, s.word)  # noqa: E731
    assert all(what(a) == what(b) for a, b in zip(*lone))  # only the extents (and so the size words) move
    uniform, skewed = (np.array([s.extents[0] for s in scenes]) for scenes in lone)
    assert (skewed <= uniform).all() and (skewed < uniform).mean() > 0.95
    assert WIDE_HALF_EXTENT[0] <= skewed.min() and skewed.max() <= WIDE_HALF_EXTENT[1]
    assert (skewed < 0.065).mean() > 3 * (uniform < 0.065).mean() > 0  # widths under 0.13 of the frame
    assert sample_scene(scene_rng("unit", 0, 3), size_bias=3.0) == sample_scene(scene_rng("unit", 0, 3))  # the classic world has no extents


def test_unturned_squares_and_crosses_fill_the_pixels_the_world_drew_as_rectangles():
    """``draw_shape`` draws squares and crosses as polygons (so they can turn); unturned, they must cover exactly the
    pixels Pillow's rectangles covered, or the world, and every split the shipped models trained on, would change."""
    from PIL import Image, ImageDraw

    from caption_assets.world.scene import WORLD_PROPORTIONS, draw_shape

    rng = random.Random(22)
    for _ in range(400):
        cx, cy, r = rng.uniform(60, 140), rng.uniform(60, 140), rng.uniform(4, 58)
        drawn, rectangles = Image.new("L", (200, 200), 0), Image.new("L", (200, 200), 0)
        rect = ImageDraw.Draw(rectangles)
        for shape in ("square", "cross"):
            draw_shape(ImageDraw.Draw(drawn), shape, cx, cy, r, 255 if shape == "square" else 128)
            if shape == "square":
                s = r * WORLD_PROPORTIONS.square
                rect.rectangle((cx - s, cy - s, cx + s, cy + s), fill=255)
            else:
                t = r * WORLD_PROPORTIONS.cross_arm
                rect.rectangle((cx - r, cy - t, cx + r, cy + t), fill=128)
                rect.rectangle((cx - t, cy - r, cx + t, cy + r), fill=128)
            assert np.array_equal(np.asarray(drawn), np.asarray(rectangles)), (shape, cx, cy, r)


@pytest.mark.parametrize("variation", ["proportions", "turned"])
def test_varied_proportions_keep_each_shape_in_its_box(variation: str):
    """A training split's knob (``vary_proportions``): each shape drawn thinner or fatter than the world draws it, and
    with "turned" also turned by up to 15 degrees, still inside the object's box (so the wide world's no-overlap
    guarantee holds); circles, and unturned hearts, are drawn as the world draws them."""
    from PIL import Image, ImageDraw

    from caption_assets.world.scene import VARIATIONS, WORLD_PROPORTIONS, draw_shape, vary_proportions

    def mask(shape: str, p) -> np.ndarray:
        im = Image.new("L", (200, 200), 0)
        draw_shape(ImageDraw.Draw(im), shape, 100, 100, 60, 255, p)
        return np.asarray(im) > 0

    varied = [vary_proportions(random.Random(i), VARIATIONS[variation]) for i in range(30)]
    assert len(set(varied)) == 30 and WORLD_PROPORTIONS not in varied
    tilts = np.array([p.tilt for p in varied])
    assert (tilts == 0).all() if variation == "proportions" else (tilts.min() < -8 and tilts.max() > 8 and np.abs(tilts).max() <= 15)
    for shape in SHAPES:
        world = mask(shape, WORLD_PROPORTIONS)
        areas = []
        for p in varied:
            m = mask(shape, p)
            ys, xs = np.nonzero(m)
            assert xs.min() >= 39 and xs.max() <= 161 and ys.min() >= 39 and ys.max() <= 161, (shape, p)
            areas.append(m.sum())
        if shape == "circle" or (shape == "heart" and variation == "proportions"):
            assert set(areas) == {world.sum()}
        elif shape != "heart":  # thinner and fatter than the world's own
            assert min(areas) < world.sum() < max(areas), shape
    if variation == "turned":  # a square may fill its whole box, a diamond be as wide as it is tall
        widest = lambda shape: max(np.ptp(np.nonzero(mask(shape, dataclasses.replace(p, tilt=0.0)))[1]) for p in varied)  # noqa: E731
        assert widest("square") > 0.97 * 120 and widest("diamond") > 0.92 * 120


def test_augmentations_keep_every_colour_name_and_slot():
    """Crop, blur, noise and JPEG q30 move pixels, never a colour across a colour name or an object out of its slot."""
    from scipy.ndimage import binary_erosion

    from caption_assets.world.data import augment

    for i in range(40):
        scene = sample_scene(scene_rng("unit-aug", 0, i), wide=i % 2 == 0, word_rate=0.0)
        im = render(scene)
        rng = random.Random(i)
        out = np.asarray(augment(im, rng), dtype=np.float64)
        assert out.shape == (scene.side, scene.side, 3)
        for obj, mask in zip(scene.objects, object_masks(scene)):
            core = binary_erosion(mask, iterations=max(1, int(0.035 * scene.side)))  # the crop shifts by <= 3%
            if core.sum() >= 4:
                assert nearest_colour(np.median(out[core], axis=0)) == obj.colour, (i, obj)


def test_a_training_split_mixes_the_two_worlds_deterministically():
    from caption_assets.world.data import render_split

    a = render_split("unit-split", 40, px=32, wide_share=0.5, augmented=True, workers=1)
    b = render_split("unit-split", 40, px=32, wide_share=0.5, augmented=True, workers=1)
    assert np.array_equal(a.pixels, b.pixels) and a.scenes == b.scenes
    wide = sum(s.extents is not None for s in a.scenes)
    assert 10 <= wide <= 30
    plain = render_split("unit-split", 40, px=32, workers=1)
    assert all(s.extents is None for s in plain.scenes)
    skewed = render_split("unit-split", 40, px=32, wide_share=0.5, augmented=True, workers=1, size_bias=3.0)
    for x, y in zip(a.scenes, skewed.scenes):  # the same scenes from the same worlds, the wide ones' objects smaller
        assert (x.extents is None) == (y.extents is None) and [o.shape for o in x.objects] == [o.shape for o in y.objects]
        assert x.extents is None or sum(y.extents) < sum(x.extents)
    varied = render_split("unit-split", 40, px=32, wide_share=0.5, augmented=True, workers=1, proportion_share=1.0)
    assert varied.scenes == a.scenes  # the same truth, other pixels wherever a shape has proportions to vary
    for scene, x, y in zip(a.scenes, a.pixels, varied.pixels):
        assert (x == y).all() == all(o.shape in ("circle", "heart") for o in scene.objects)
    turned = render_split("unit-split", 40, px=32, wide_share=0.5, augmented=True, workers=1, proportion_share=1.0, variation="turned")
    assert turned.scenes == a.scenes  # a heart turns, a circle alone still looks the same
    for scene, x, y in zip(a.scenes, a.pixels, turned.pixels):
        assert (x == y).all() == all(o.shape == "circle" for o in scene.objects)
    mixed = render_split("unit-split", 40, px=32, wide_share=0.5, augmented=True, workers=1, size_bias=(3.0, 0.5), max_half_extent=0.42)
    moved = [(sum(y.extents) < sum(x.extents), sum(y.extents) > sum(x.extents)) for x, y in zip(a.scenes, mixed.scenes) if x.extents]
    assert any(m[0] for m in moved) and any(m[1] for m in moved)  # each wide scene skewed one way or the other


def test_a_training_split_may_draw_objects_wider_than_the_world_does():
    """``max_half_extent`` (a training split's knob): a lone centred object up to 0.84 of the frame, so that three
    quarters of the frame is inside what a model saw, with the wide world's guarantees kept (inside the frame, no
    overlap: ``test_wide_scenes_are_drawn_as_their_truth_says`` runs it too)."""
    scenes = [sample_scene(scene_rng("unit-reach", 0, i), wide=True, max_objects=1, size_bias=0.5, max_half_extent=0.42) for i in range(300)]
    widths = np.array([2 * s.extents[0] for s in scenes])
    assert 0.75 < widths.max() <= 0.84 and (widths > 0.75).sum() >= 10
    world = [sample_scene(scene_rng("unit-reach", 0, i), wide=True, max_objects=1, size_bias=0.5) for i in range(300)]
    assert max(2 * s.extents[0] for s in world) <= 0.75


def test_a_wide_crawl_draws_the_wide_world_with_the_same_truth_schema(tmp_path: Path):
    classic = write_crawl(tmp_path / "c", CrawlSpec(shard_plan(2, 15), seed=9, broken=False))[1]
    wide = write_crawl(tmp_path / "w", CrawlSpec(shard_plan(2, 15), seed=9, broken=False, wide=True))[1]
    assert wide.schema == classic.schema and wide.height == classic.height
    assert not wide.select("clean_caption").equals(classic.select("clean_caption"))
