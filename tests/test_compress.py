"""Compression with planted structure: duplicate groups, quotas, the target ratio."""

from __future__ import annotations

import numpy as np
import polars as pl

from caption_assets.compress import CompressConfig, codebook_select, compress, exact_duplicates, normalise, quotas, semdedup


def planted(n_groups: int = 40, group_size: int = 5, dim: int = 64, seed: int = 0):
    """n_groups far-apart centres; each group = near-duplicates (cos > 0.99) of its centre."""
    rng = np.random.default_rng(seed)
    centres = normalise(rng.normal(size=(n_groups, dim)))
    x = np.repeat(centres, group_size, axis=0) + rng.normal(scale=0.005, size=(n_groups * group_size, dim))
    group = np.repeat(np.arange(n_groups), group_size)
    score = rng.uniform(size=len(x))
    return normalise(x), group, score


def test_semdedup_keeps_exactly_the_best_of_each_planted_group():
    x, group, score = planted()
    clusters = group % 7  # several groups share a cluster, as after k-means
    drop = semdedup(x, clusters, score, eps=0.05, eligible=np.ones(len(x), bool))
    survivors = np.flatnonzero(~drop)
    assert len(survivors) == 40
    assert sorted(group[survivors].tolist()) == list(range(40))
    for g in range(40):
        members = np.flatnonzero(group == g)
        assert survivors[group[survivors] == g][0] == members[np.argmax(score[members])]


def test_semdedup_compares_with_kept_pairs_only():
    # a ~ b and b ~ c but a !~ c: b goes (similar to kept a), c stays (its only neighbour b was dropped)
    t = np.deg2rad([0.0, 14.0, 28.0])
    x = normalise(np.stack([np.cos(t), np.sin(t)], axis=1))
    drop = semdedup(x, np.zeros(3, np.int64), np.array([3.0, 2.0, 1.0]), eps=1 - np.cos(np.deg2rad(20)), eligible=np.ones(3, bool))
    assert drop.tolist() == [False, True, False]


def test_quotas():
    assert quotas(np.array([100, 100, 100, 100]), 40, 0.0).tolist() == [10, 10, 10, 10]
    assert quotas(np.array([400, 100, 100, 0]), 60, 1.0).tolist() == [40, 10, 10, 0]
    assert quotas(np.array([400, 3, 3, 3]), 40, 0.0).tolist() == [31, 3, 3, 3]  # small clusters full, rest moves
    assert quotas(np.array([5, 5]), 100, 0.5).tolist() == [5, 5]


def test_codebook_selection_respects_quotas_and_ranks():
    rng = np.random.default_rng(3)
    clusters = np.repeat(np.arange(4), [50, 30, 15, 5])
    score = rng.uniform(size=100)
    sel = codebook_select(clusters, score, np.ones(100, bool), target=20, alpha=0.0, min_score=None)
    assert sel.sum() == 20 and np.bincount(clusters[sel], minlength=4).tolist() == [5, 5, 5, 5]
    for c in range(4):
        members = np.flatnonzero(clusters == c)
        top = members[np.argsort(-score[members])[:5]]
        assert set(np.flatnonzero(sel & (clusters == c))) == set(top)
    floor = codebook_select(clusters, score, np.ones(100, bool), target=20, alpha=0.0, min_score=0.9)
    assert (score[floor] >= 0.9).all() and floor.sum() < 20


def test_exact_duplicates_by_sha_and_by_verified_copies():
    df = pl.DataFrame({
        "uid": ["u0", "u1", "u2", "u3", "u4", "u5"],
        "sha256": ["a", "a", "b", "c", "d", "e"],
        "final_caption": ["x", "y", "same caption", "same caption", "other", "z"],
        "duplicate_kind": [None, "exact", None, None, "copy", "copy"],
        "duplicate_of": [None, "u0", None, None, "u2", "u4"],  # u5 copies u4, itself a copy of u2
    })
    drop = exact_duplicates(df, np.array([0.1, 0.9, 0.5, 0.8, 0.7, 0.95]))
    # one survivor per image: u1 (bytes of u0), u5 (best of the copies u2/u4/u5); u3's caption alone is no reason
    assert drop.tolist() == [True, False, True, False, True, False]


def test_compress_meets_the_target_ratio_with_one_survivor_per_group():
    x, group, score = planted(n_groups=60, group_size=5)
    n = len(x)
    df = pl.DataFrame({"sha256": [f"h{i}" for i in range(n)], "final_caption": [f"c{i}" for i in range(n)], "phash": np.arange(n) * 1_000_003, "final_score": score})
    res = compress(df, x, CompressConfig(target_ratio=0.1, n_clusters=12, alpha=0.0))
    assert res.target == 30 and res.selected.sum() == 30
    assert len(set(group[res.selected])) == 30  # never two near-duplicates of one group
    assert res.semantic_dup.sum() == n - 60


def test_a_cap_on_the_export_binds_below_the_ratio():
    x, group, score = planted(n_groups=60, group_size=5)
    n = len(x)
    df = pl.DataFrame({"sha256": [f"h{i}" for i in range(n)], "final_caption": [f"c{i}" for i in range(n)], "phash": np.arange(n) * 1_000_003, "final_score": score})
    res = compress(df, x, CompressConfig(target_ratio=0.1, n_clusters=12, alpha=0.0, max_selected=17))
    assert res.target == 17 and res.selected.sum() == 17
    assert len(set(group[res.selected])) == 17
    loose = compress(df, x, CompressConfig(target_ratio=0.1, n_clusters=12, alpha=0.0, max_selected=500))
    assert loose.target == 30  # a cap above the ratio's target changes nothing
