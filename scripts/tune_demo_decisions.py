"""Tune the demo profile's decisions on a *training* crawl of the world, never on the bundled sample.

    python scripts/tune_demo_decisions.py [--samples 1000] [--seed 7]

Writes a world crawl (its own seed, disjoint from the sample's), runs the chain on it with the demo
profile, joins the outputs with the crawl's truth and prints the values to put in
``caption_assets/profiles/demo.yaml``:

- ``scoring.min_clip_score``: the CLIP floor that best separates true captions (correct, partial,
  duplicates' paraphrases) from false ones (misaligned, wrong attribute, boilerplate, site text), by F1;
- ``compress.semdedup_eps``: 1 - the image-embedding cosine that best separates near-duplicates from
  their nearest distinct scene, by F1;
- ``compress.target_ratio``: the share of kept pairs that leaves the export at about 30% of the
  ingested pairs, never more than the unique share of the kept ones;
  ``compress.max_ingested_share`` (0.3, not tuned) holds the export at 30% on crawls that keep a larger share;
- ``fusion.score_margin``: the CLIP's own noise between equally true phrasings: the 90th percentile of the
  score difference between two true paraphrases of the same kept image. A fused caption that scores below its best
  input by less than this is not worse by any measure the CLIP can vouch for.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caption_assets.fusion import phrasing_noise  # noqa: E402
from caption_assets.world.crawl import CrawlSpec, preferences, shard_plan, write_crawl  # noqa: E402

TRUE_CAPTION = ["correct", "text_in_image", "partial", "exact_duplicate", "near_duplicate"]
FALSE_CAPTION = ["misaligned", "misaligned_web", "wrong_attribute", "boilerplate", "site_text"]


def best_threshold(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float, float, float]:
    """(threshold, F1, precision, recall) for 'score >= threshold means positive', best F1 over the observed scores."""
    best = (0.0, -1.0, 0.0, 0.0)
    for t in np.unique(np.concatenate([pos, neg])):
        tp, fp = (pos >= t).sum(), (neg >= t).sum()
        p, r = tp / max(tp + fp, 1), tp / max(len(pos), 1)
        f1 = 2 * p * r / max(p + r, 1e-9)
        if f1 > best[1]:
            best = (float(t), float(f1), float(p), float(r))
    return best


def paraphrase_embeddings(truth_rows: pl.DataFrame, seed: int) -> np.ndarray:
    """[N, 2, D] text embeddings of two true paraphrases per truth row, by the profile's CLIP."""
    import random

    from caption_assets.settings import load_settings
    from caption_assets.world.captions import paraphrase
    from caption_assets.world.scene import Scene, SceneObject
    from resources import ClipScorer

    rng = random.Random(f"paraphrase-noise:{seed}")
    texts = []
    for objects, background, side, word in truth_rows.select("objects", "background", "side", "word").iter_rows():
        scene = Scene(tuple(SceneObject(**o) for o in objects), background, False, side, word)
        texts += [paraphrase(scene, rng) for _ in range(2)]
    clip = ClipScorer(**{**load_settings().clip, "device": "cpu"})
    emb = clip.encode_texts(texts).astype(np.float32)
    return emb.reshape(truth_rows.height, 2, -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder instead of a temporary one")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="tune-"))
    per_shard = args.samples // 5
    crawl, truth = write_crawl(work, CrawlSpec(shard_plan(5, per_shard), seed=args.seed, broken=False))
    ann = work / "annotations"
    ann.mkdir(exist_ok=True)
    (ann / "preferences.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preferences(truth, 0.4, args.seed)))
    os.environ.update(CAPTION_ASSETS_ANNOTATIONS_DIR=str(ann), CAPTION_ASSETS_AUTOMATION="off")
    from caption_assets.cli import _configure_env, run_chain

    _configure_env(crawl, work / "data", "demo")
    if run_chain(verbose=True):
        sys.exit("a run failed; see the log above")
    lake = work / "data" / "lake"
    scored = pl.read_parquet(str(lake / "scored_pairs" / "*.parquet")).join(truth.select("uid", "noise", "scene_id", "duplicate_of"), on="uid")
    clean = scored.filter(pl.col("primary_flag").is_null())  # what the CLIP floor decides on
    s = lambda kinds: clean.filter(pl.col("noise").is_in(kinds))["clip_score"].to_numpy()  # noqa: E731
    floor, f1, p, r = best_threshold(s(TRUE_CAPTION), s(FALSE_CAPTION))

    emb = np.stack(scored["image_emb"].to_numpy()).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    pos_of = {u: i for i, u in enumerate(scored["uid"])}
    near = scored.with_row_index("i").filter((pl.col("noise") == "near_duplicate") & pl.col("duplicate_of").is_in(list(pos_of)))
    dup_cos = np.array([float(emb[i] @ emb[pos_of[o]]) for i, o in zip(near["i"], near["duplicate_of"])])
    scene = scored["scene_id"].to_numpy()
    sims = emb @ emb.T
    sims[scene[:, None] == scene[None, :]] = -1  # nearest *distinct* scene
    distinct_cos = sims.max(axis=1)
    thr, f1_dup, p_dup, r_dup = best_threshold(dup_cos, distinct_cos)

    ingested = scored.height
    kept = clean.filter(pl.col("clip_score") >= floor)
    unique_share = kept["scene_id"].n_unique() / max(kept.height, 1)
    ratio = round(min(0.3 * ingested / max(kept.height, 1), 0.95 * unique_share), 2)
    kept_true = kept.filter(pl.col("noise") == "correct").join(truth.select("uid", "objects", "background", "side", "word"), on="uid")
    margin = phrasing_noise(emb[[pos_of[u] for u in kept_true["uid"]]], paraphrase_embeddings(kept_true, args.seed))
    print(json.dumps({
        "tuning_crawl": {"samples": ingested, "seed": args.seed, "folder": str(work)},
        "scoring.min_clip_score": round(floor, 3), "floor_f1": round(f1, 3), "floor_precision_true_captions": round(p, 3), "floor_recall_true_captions": round(r, 3),
        "compress.semdedup_eps": round(1 - thr, 4), "near_dup_f1": round(f1_dup, 3), "near_dup_precision": round(p_dup, 3), "near_dup_recall": round(r_dup, 3),
        "compress.target_ratio": ratio, "kept_after_floor": kept.height, "unique_share_of_kept": round(unique_share, 3),
        "fusion.score_margin": round(margin, 3), "paraphrase_noise_images": kept_true.height,
    }, indent=2))


if __name__ == "__main__":
    main()
