"""Degenerate captions are rejected at every step that could let one through: candidates, fusion, export."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from caption_assets.compress import CompressConfig, compress, normalise
from caption_assets.degeneration import degeneration, is_degenerate
from caption_assets.fusion import Guardrails, reject_reason

# What the random-weight demo exported before the world existed (issue 10), and other loops.
DEGENERATE = [
    "the the the the the the the the the the the the, a yellow triangle on a blue background",
    "black black black black black black, 3 bed home in Kirklees Close",
    "a large red circle on the left on the left on the left",
    "red circle red circle red circle",
    "circle star circle star circle star circle star",
    "small small large large large large large large large large large",
    "... !!! 123 456",
    "",
]
NORMAL = [
    "a large red circle on the left, a small blue star on the right and a green heart at the top on a white background",
    "a red circle, a red star, a red heart",
    "two small red circles left of a large blue star on a green background",
    "an astronaut in a white spacesuit posing in front of a flag",
    "Assistance Dogs and Dog Charities 1st Place Winner, Ruud Lauritsen, Netherlands",
    "very very good",
    "red circle",
]


@pytest.mark.parametrize("text", DEGENERATE)
def test_degenerate_examples_are_caught(text):
    assert is_degenerate(text)


@pytest.mark.parametrize("text", NORMAL)
def test_normal_captions_pass(text):
    assert degeneration(text) is None


def test_fusion_guardrail_rejects_degenerate_with_its_reason():
    sources = ["a yellow triangle on a blue background", "a yellow triangle"]
    assert reject_reason(DEGENERATE[0], sources, 0.9, 0.1, Guardrails()) == "degenerate"
    assert reject_reason("a yellow triangle at the top on a blue background", sources, 0.9, 0.1, Guardrails()) is None


def test_rerank_never_picks_a_degenerate_candidate():
    from caption_assets.assets.recaption import rerank
    from caption_assets.world.models import CLIP_CHECKPOINT
    from resources.clip import ClipScorer

    clip = ClipScorer(model_name="world-clip", pretrained=str(CLIP_CHECKPOINT), num_workers=0, device="cpu")
    cands = [["red red red red", "a red circle in the centre on a blue background"], ["the the the the", "... ..."]]
    emb = clip.encode_texts(["red red red red", "the the the the"])  # an image embedding that 'likes' the loop
    scores, best, _ = rerank(emb, cands, clip)
    assert best[0] == 1 and np.isneginf(scores[0][0])
    assert all(np.isneginf(s) for s in scores[1])  # nothing usable: the row gets no synthetic caption


def test_compression_never_selects_a_degenerate_caption():
    n = 60
    rng = np.random.default_rng(0)
    captions = [f"a red circle number {i}" if i % 4 else "the the the the the" for i in range(n)]
    score = rng.uniform(size=n)
    score[::4] += 10  # the degenerate rows score best: they must still not be chosen
    df = pl.DataFrame({"sha256": [f"h{i}" for i in range(n)], "final_caption": captions, "phash": np.arange(n) * 1_000_003, "final_score": score})
    res = compress(df, normalise(rng.normal(size=(n, 16))), CompressConfig(target_ratio=0.5, score="clip", semdedup_eps=0.0))
    assert res.degenerate.sum() == 15
    assert not (res.selected & res.degenerate).any()
    assert res.selected.sum() == 30


def test_export_check_fails_on_a_degenerate_caption(tmp_path):
    from caption_assets.assets.compressed import CompressedDatasetConfig, run_checks

    pl.DataFrame({"uid": ["s::a", "s::b"], "key": ["a", "b"], "final_caption": ["a red circle", "black black black black"], "final_source": ["fused", "alt_text"]}).write_parquet(tmp_path / "manifest.parquet")
    results = {r.check_name: r for r in run_checks(tmp_path, 2, 2, CompressedDatasetConfig())}
    assert not results["no_degenerate_captions"].passed
    assert results["no_degenerate_captions"].metadata["degenerate"].value == 1
