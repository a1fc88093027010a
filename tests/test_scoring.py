"""scored_pairs and the reward model: a tiny open_clip model built here, loaded by checkpoint path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from caption_assets.reward import expand_preferences, train_reward_head
from caption_assets.scoring import KeepRules, assign_levels, keep_decisions, level_boundaries
from resources.clip import LOAD_COUNT, ClipScorer, build_random_checkpoint
from tests.helpers import image_bytes, write_tar


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return build_random_checkpoint(tmp_path_factory.mktemp("models") / "tiny.pt", seed=7)


def test_checkpoint_loads_through_the_path_route(tiny_checkpoint: Path):
    scorer = ClipScorer(model_name="demo-tiny-clip", pretrained=str(tiny_checkpoint), num_workers=0, batch_size=4)
    saved = torch.load(tiny_checkpoint, weights_only=True)["state_dict"]
    loaded = scorer.model.state_dict()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    text = scorer.encode_texts(["a red square", "a blue circle", "a cat"])
    assert text.shape == (3, 128) and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)


def test_level_boundaries_and_assignment():
    scores = np.arange(100, dtype=np.float64) / 100
    bounds = level_boundaries(scores, 4)
    assert bounds == pytest.approx([0.2475, 0.495, 0.7425])
    levels = assign_levels(scores, bounds)
    assert np.bincount(levels).tolist() == [25, 25, 25, 25]
    assert assign_levels(np.array([0.495]), bounds).tolist() == [2]  # on the edge goes up


def test_keep_rules_pick_exact_keys():
    df = pl.DataFrame({
        "key": ["a", "b", "c", "d", "e", "f"],
        "flags": [[], ["small_image"], [], ["repeated_caption", "caption_too_short"], [], []],
        "primary_flag": [None, "small_image", None, "repeated_caption", None, None],
        "clip_score": [0.30, 0.35, 0.10, 0.40, 0.33, 0.31],
        "reward_score": [1.0, 1.0, 1.0, 1.0, -2.0, 0.5],
    })
    out, floor = keep_decisions(df, KeepRules(drop_flags=("small_image", "caption_too_short"), min_clip_score=0.2, min_reward_score=0.0))
    assert floor == 0.2
    assert out.filter("keep")["key"].to_list() == ["a", "f"]
    assert dict(zip(out["key"], out["drop_reason"])) == {"a": None, "b": "flag:small_image", "c": "low_clip_score", "d": "flag:caption_too_short", "e": "low_reward_score", "f": None}
    out, floor = keep_decisions(df, KeepRules(drop_flags=(), drop_clip_quantile=0.5))
    assert floor == pytest.approx(0.32) and out.filter("keep")["key"].to_list() == ["b", "d", "e"]


def planted(n_records: int, dim: int, seed: int, shuffle: bool) -> tuple:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=dim)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    images = unit(rng.normal(size=(n_records, dim)))
    captions = [unit(rng.normal(size=(3, dim))) for _ in range(n_records)]
    preferred = [int(np.argmax(c @ w)) for c in captions]  # people prefer captions along w
    if shuffle:
        preferred = rng.integers(0, 3, size=n_records).tolist()
    return images.astype(np.float32), [c.astype(np.float32) for c in captions], preferred


def test_reward_head_learns_a_planted_preference():
    pairs = expand_preferences(*planted(600, 32, seed=1, shuffle=False))
    _, report = train_reward_head(pairs, max_epochs=300, seed=0)
    assert report.heldout_accuracy > 0.9
    assert report.n_heldout > 0 and report.best_epoch <= report.epochs_run


def test_reward_head_is_at_chance_on_shuffled_labels():
    pairs = expand_preferences(*planted(600, 32, seed=1, shuffle=True))
    _, report = train_reward_head(pairs, max_epochs=300, seed=0)
    assert 0.35 < report.heldout_accuracy < 0.65


def test_scored_pairs_end_to_end_and_one_model_load(tmp_path: Path, settings_for, instance, tiny_checkpoint):
    from caption_assets.definitions import build_definitions

    crawl = tmp_path / "crawl"
    crawl.mkdir()
    for s in range(3):
        members = []
        for i in range(6):
            members += [(f"{i:03d}.jpg", image_bytes(seed=s * 10 + i + 1)), (f"{i:03d}.txt", f"a red square with stripe {s} {i}".encode())]
        members += [("tiny.jpg", image_bytes(size=(32, 32), seed=99 + s)), ("tiny.txt", b"a very small red square")]
        write_tar(crawl / f"s{s}.tar", members)
    ann = tmp_path / "ann"
    ann.mkdir()
    recs = [{"image_key": f"s{s}.tar::{i:03d}", "captions": [f"a red square with stripe {s} {i}", "IMG_0001.jpg", "a dog on a beach"], "preferred": 0} for s in range(3) for i in range(6)]
    (ann / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + "not json\n")
    settings = settings_for(crawl, CAPTION_ASSETS_CLIP_MODEL="demo-tiny-clip", CAPTION_ASSETS_CLIP_PRETRAINED=str(tiny_checkpoint), CAPTION_ASSETS_ANNOTATIONS_DIR=str(ann))
    defs = build_definitions(settings)
    keys = ["s0.tar", "s1.tar", "s2.tar"]
    instance.add_dynamic_partitions("shards", keys)
    for k in keys:
        assert defs.resolve_job_def("ingest_shard").execute_in_process(partition_key=k, instance=instance).success
    before = LOAD_COUNT["n"]
    reward = defs.resolve_job_def("train_reward_model").execute_in_process(instance=instance)
    meta = reward.asset_materializations_for_node("alignment_reward_model")[0].metadata
    assert meta["trained"].value is True and meta["matched_to_raw_pairs"].value == 18 and meta["rejected_lines"].value == {"bad_json": 1}
    assert defs.resolve_job_def("compute_alignment_levels").execute_in_process(instance=instance).success
    for k in keys:
        assert defs.resolve_job_def("shard_models").execute_in_process(partition_key=k, instance=instance).success
    assert LOAD_COUNT["n"] - before <= 1  # one model load for the reward run and three partitions

    df = pl.read_parquet(settings.lake_dir / "scored_pairs" / "s1.tar.parquet")
    assert df.height == 7 and df.schema["image_emb"] == pl.Array(pl.Float16, 128)
    img = df["image_emb"].to_numpy().astype(np.float32)
    txt = df["text_emb"].to_numpy().astype(np.float32)
    assert np.allclose(np.linalg.norm(img, axis=1), 1, atol=2e-3)
    cos = (img * txt).sum(1) / np.linalg.norm(img, axis=1) / np.linalg.norm(txt, axis=1)
    assert np.allclose(df["clip_score"].to_numpy(), cos, atol=1e-6)
    assert df["reward_score"].null_count() == 0
    assert df.filter(pl.col("key") == "tiny")["drop_reason"].to_list() == ["flag:small_image"]
    assert sorted(df["alignment_level"].unique().to_list()) == [0, 1, 2, 3]
    # in = kept + filtered for the stage, in the warehouse
    from resources import QualityWarehouse

    f = QualityWarehouse(path=str(settings.warehouse_path)).funnel("scored_pairs").filter(pl.col("partition") == "s1.tar")
    got = {o: int(n) for o, n in f.group_by("outcome").agg(pl.col("count").sum()).iter_rows()}
    assert got["in"] == 7 and got["kept"] + got["filtered"] == 7 and got["filtered"] >= 1
