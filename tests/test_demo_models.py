"""The shipped demo models reach the issue's thresholds on the world's held-out test split.

Measured through the product's loaders (``load_clip`` for the open_clip checkpoint, ``Captioner`` for
the ``save_pretrained`` folder, ``CaptionFuser`` for the fuser), on scenes drawn from the test split's seeds,
rendered and JPEG-encoded as a crawl would serve them (the fuser: the prompts those scenes' inputs make).
Nothing is trained here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caption_assets.degeneration import is_degenerate
from caption_assets.world.models import CAPTIONER_FOLDER, CLIP_CHECKPOINT, FUSER_FOLDER

# Floors under the shipped captioner's measures on these scenes (fifteen stages: wide test split 0.975 on 120; probe
# 0.92, 1.00, 1.00, 1.00, 1.00 at widths 0.1-0.75 on 64 each; after thirteen 0.975 and 0.94, 1.00, 1.00, 1.00, 1.00;
# after eleven 0.975 and 0.95, 1.00, 1.00, 0.98, 1.00).
# The probe floor is issue 22's target itself. After nine
# stages it measured 0.96 and 1.00, 1.00, 1.00, 0.94 (0.89 at 0.1, under the target); after
# seven stages it measured 0.94 and 1.00, 1.00, 1.00, 0.94 on 32 a width (0.81 at 0.1); after four 0.87 and 1.00,
# 1.00, 1.00, 0.97 (0.62 at 0.1); before the tag-head stages 0.71 and 1.00, 1.00, 0.91, 0.88; the captioner trained on
# the classic world alone got 0.12 and 0.00 at 0.5 and 0.75.
WIDE_FLOOR = 0.9
PROBE_FLOOR = 0.9
PROBE_N = 64  # images a width: at 32 one image is 3 points, as much as the margin over a 0.9 floor


@pytest.fixture(scope="module")
def clip():
    from resources.clip import load_clip

    return load_clip("world-clip", str(CLIP_CHECKPOINT), "cpu", "fp32")


@pytest.fixture(scope="module")
def zeroshot_prompts(clip):
    from caption_assets.world.evaluate import ZEROSHOT_PROMPTS, _clip_embed

    return _clip_embed(*clip, [], ZEROSHOT_PROMPTS)[1]


@pytest.fixture(scope="module")
def clip_figures(clip):
    from caption_assets.world.evaluate import clip_figures

    return clip_figures(*clip, n=250)


@pytest.fixture(scope="module")
def captioner_figures():
    from caption_assets.world.evaluate import captioner_figures
    from resources.captioner import Captioner

    cap = Captioner(model=str(CAPTIONER_FOLDER), device="cpu", num_workers=0, decoding="diverse_beam", num_candidates=3, beams_per_group=2, max_new_tokens=40)
    cap.load()
    return captioner_figures(cap, n=150)


def test_clip_zero_shot_colour(clip_figures):
    assert clip_figures["zeroshot_colour_acc"] >= 0.9


def test_clip_zero_shot_shape_reaches_the_target(clip_figures):
    assert clip_figures["zeroshot_shape_acc"] >= 0.9  # the shipped model measures 0.993 on 400 test images


def test_clip_zero_shot_shape_in_the_wide_world(clip, zeroshot_prompts):
    """Objects from a tenth to three quarters of the frame, textured backgrounds (held-out seeds; 0.993 on 400, 1.00 on
    these 200; five stages 0.985 and 0.99; 0.93 on 400 before the small-object stages)."""
    from caption_assets.world.evaluate import zeroshot_on_singles

    shape, colour = zeroshot_on_singles(*clip, zeroshot_prompts, 200, wide=True)
    assert shape >= 0.85 and colour >= 0.95


def _clip_probe_accuracy(clip, prompts: np.ndarray, width: float, renderer: str = "skimage") -> tuple[float, float]:
    """Zero-shot (shape, colour) on ``_probe``'s out-of-renderer shapes at ``width`` of the frame."""
    from caption_assets.world.evaluate import _clip_embed, zeroshot_accuracy

    scenes, images = _probe(width, renderer)
    image_emb, _ = _clip_embed(*clip, images, [])
    return zeroshot_accuracy(image_emb, prompts, scenes)


@pytest.mark.parametrize("width", [0.2, 0.35, 0.5, 0.75])
def test_clip_tells_shapes_another_renderer_drew_at_any_scale(clip, zeroshot_prompts, width: float):
    # issue 22's target; the shipped CLIP measures 1.00, 1.00, 0.97, 0.98 on these 64 a width (0.86 at 0.1), colour >= 0.98;
    # five stages 1.00, 0.98, 0.98, 0.94
    shape, colour = _clip_probe_accuracy(clip, zeroshot_prompts, width)
    assert shape >= 0.8 and colour >= 0.9


def test_clip_tells_most_of_the_smallest_probe_shapes(clip, zeroshot_prompts):
    """A tenth of the frame (~10 px at 96 px): issue 22's target is 0.8, and the shipped CLIP meets it by four images
    here (0.86: 55 of 64) and by five to eight points on the bench's larger draws (0.88 on 160, 0.85 on 400; README).
    A floor a few images under the target, so a regression shows without one image's luck failing the suite; after
    five stages it measured 0.81, after three 0.72, before the small-object stages 0.47."""
    assert _clip_probe_accuracy(clip, zeroshot_prompts, 0.1)[0] >= 0.75


def test_clip_separates_true_from_misaligned_and_wrong_attribute(clip_figures):
    assert clip_figures["misaligned_auc"] >= 0.95
    assert clip_figures["beats_wrong_attribute"] >= 0.8


def test_captioner_names_every_object(captioner_figures):
    assert captioner_figures["greedy_names_every_object"] >= 0.9


@pytest.fixture(scope="module")
def captioner():
    from resources.captioner import Captioner

    cap = Captioner(model=str(CAPTIONER_FOLDER), device="cpu", num_workers=0, decoding="greedy", num_candidates=1, max_new_tokens=40)
    cap.load()
    return cap


def test_captioner_names_every_object_in_the_wide_world(captioner):
    """Objects from a tenth to three quarters of the frame, contracted layouts, three textures (held-out seeds)."""
    from caption_assets.world.captions import names_every_object
    from caption_assets.world.evaluate import as_crawled, test_scenes

    scenes = test_scenes(120, offset=300_000, wide=True)
    caps = [c[0] for c in captioner.generate(torch.stack([captioner._pixels(as_crawled(s)) for s in scenes]))]
    assert np.mean([names_every_object(c, s.objects) for c, s in zip(caps, scenes)]) >= WIDE_FLOOR


def _probe(width: float, renderer: str = "skimage") -> tuple[list, list]:
    """``bench/probe_models.py``'s probe, smaller: one shape drawn by scikit-image (anti-aliased, speckled, jittered
    colours, JPEG q75), by ``bench/sdf_probe.py``'s distance fields (turned, lit unevenly, WebP), as matplotlib's
    markers (``bench/mpl_probe.py``: blotched background, JPEG) or as font glyphs (``bench/glyph_probe.py``), centred,
    at ``width`` of the frame; the world's renderer never drew these pixels."""
    import random

    from bench.probe_models import probe_drawer
    from caption_assets.world.scene import sample_scene

    scenes = [sample_scene(random.Random(f"test-probe:{width}:{i}"), max_objects=1, word_rate=0.0) for i in range(PROBE_N)]
    rng = np.random.default_rng(7)
    draw = probe_drawer(renderer)
    return scenes, [draw(s, rng, width=width) for s in scenes]


def _probe_accuracy(captioner, width: float, renderer: str = "skimage") -> float:
    from caption_assets.world.captions import names_every_object

    scenes, images = _probe(width, renderer)
    caps = [c[0] for c in captioner.generate(torch.stack([captioner._pixels(im) for im in images]))]
    return float(np.mean([names_every_object(c, s.objects) for c, s in zip(caps, scenes)]))


@pytest.mark.parametrize("width", [0.1, 0.2, 0.35, 0.5, 0.75])
def test_captioner_names_shapes_another_renderer_drew_at_any_scale(captioner, width: float):
    # at a tenth of the frame (~19 px at the captioner's 192 px) the shipped captioner measures 0.92 here, 0.93 on the
    # bench's 160 and 0.945 on 400 more (README); after thirteen stages (96 px) 0.94, 0.93 and 0.930, after eleven
    # 0.95, after nine 0.89, after seven 0.81
    assert _probe_accuracy(captioner, width) >= PROBE_FLOOR


@pytest.mark.parametrize("width", [0.2, 0.35, 0.5, 0.75])
def test_captioner_names_matplotlibs_marker_shapes_from_a_fifth_of_the_frame(captioner, width: float):
    """Issue 22's target on the third renderer. The fourteen- and fifteen-stage captioner (192 px, 8 px patches)
    measures 0.97, 1.00, 0.97, 0.98 on these 64 a width (0.95, 0.98, 0.98, 0.97 on the bench's 400); the thirteen-stage
    one at 96 px measured 0.89 at a fifth here (0.91 on 400). A tenth of the frame is left out: it is under the target
    on the bench's larger draws (0.88 on 160, 0.86 on 400; README), so a pass on 64 here would claim too much."""
    assert _probe_accuracy(captioner, width, "matplotlib") >= PROBE_FLOOR


@pytest.mark.parametrize("width", [0.2, 0.35, 0.5, 0.75])
def test_both_models_name_font_glyphs_from_a_fifth_of_the_frame(captioner, clip, zeroshot_prompts, width: float):
    """Issue 22's targets on the fifth renderer (``bench/glyph_probe.py``), written after the shipped models were
    trained and shaping none of their stages. They measure 1.00, 1.00, 1.00, 1.00 and CLIP shape 1.00, 1.00, 0.98,
    0.95 on these 64 a width (0.99-1.00 and 0.97-1.00 on the bench's 400). A tenth of the frame is left out: there the
    captioner is at its target by nothing (0.92 on the bench's 160, 0.90 on 400, 0.89 on these 64) and the CLIP too
    (0.82, 0.82, 0.80)."""
    assert _probe_accuracy(captioner, width, "glyph") >= PROBE_FLOOR
    shape, colour = _clip_probe_accuracy(clip, zeroshot_prompts, width, "glyph")
    assert shape >= 0.8 and colour >= 0.9


def test_both_models_see_the_largest_shapes_a_fourth_renderer_drew(captioner, clip, zeroshot_prompts):
    """Three quarters of the frame drawn as distance fields: squares there fill their box, wider than any the world
    draws, and the models shipped before the turned-shapes stages gave them the background's colour (captioner 0.82,
    CLIP shape 0.78 on the bench's 160; 0.86 and 0.72 on these 64). Issue 22's targets; the shipped models measure 0.98
    and 0.89 on these 64 (0.97 and 0.94 on the bench's 160; the thirteen-stage captioner 0.95 and 0.97)."""
    assert _probe_accuracy(captioner, 0.75, "sdf") >= PROBE_FLOOR
    assert _clip_probe_accuracy(clip, zeroshot_prompts, 0.75, "sdf")[0] >= 0.8


def test_diverse_beam_candidates_are_distinct_and_well_formed(captioner_figures):
    assert captioner_figures["dbs_all_distinct"] >= 0.9
    assert captioner_figures["dbs_candidates_correct"] >= 0.6
    for ex in captioner_figures["examples"]:
        assert len(set(ex["diverse_beam"])) == len(ex["diverse_beam"])
        assert not any(is_degenerate(c) for c in ex["diverse_beam"])


@pytest.fixture(scope="module")
def fuser_figures():
    from caption_assets.world.train_fuser import evaluate_fuser

    return evaluate_fuser(FUSER_FOLDER, n=240)


def test_fuser_keeps_the_printed_word_an_input_carried_and_makes_none_up(fuser_figures):
    assert fuser_figures["words_carried"] >= 30
    assert fuser_figures["word_kept_when_carried"] >= 0.95
    assert fuser_figures["word_in_no_input"] == 0.0  # it copies words; it never makes one up
    # a misaligned alt-text (another scene's caption) may quote a word while the OCR is silent: the fuser cannot tell
    # that from an alt-text naming a word the OCR missed, and copies it now and then
    assert fuser_figures["word_written_when_not_carried"] <= 0.05


def test_fuser_passes_the_captioners_objects_on_without_inventing_more(fuser_figures):
    # the simulated captioner has one attribute wrong or an object missing in ~9% of its captions; the alt-text
    # cannot always repair that, so the fused caption is held to the captioner's level, not above it
    assert fuser_figures["fused_attribute_accuracy"] >= fuser_figures["synthetic_attribute_accuracy"] - 0.03
    assert fuser_figures["fused_hallucination_rate"] <= 0.08
