"""Where curation_eval's zero-shot colour errors go: to the background's colour?

    python bench/zeroshot_errors.py [--lake data/lake] [--steps 1500] [--seed 0]

Trains the `bag` recipe on three of curation_eval's training sets from the lake (curated, curated_alt_text,
all_raw; one seed) and classifies the held-out single-object scenes by colour with the canonical prompt ensemble,
as ``curation_eval`` does. For each set: its zero-shot colour accuracy, the share of its errors that name the
scene's background colour (chance: 1 in 7), and the share of its captions that name a background at all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", type=Path, default=ROOT / "data" / "lake")
    ap.add_argument("--steps", type=int, default=1500, help="the recipe's steps (bench/eval.py: 1500; the demo profile: 300)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    from caption_assets.assets.evaluation import read_lake
    from caption_assets.curation_eval.recipe import Recipe, train
    from caption_assets.curation_eval.run import decode_images
    from caption_assets.curation_eval.testset import ZEROSHOT_OFFSET, _embed, build_testset
    from caption_assets.curation_eval.training_sets import build_training_sets
    from caption_assets.ingest import POINTER_COLUMNS
    from caption_assets.world.evaluate import ZEROSHOT_PROMPTS, test_scenes, zeroshot_classes
    from caption_assets.world.scene import COLOURS
    from resources import LakeStorage

    recipe = Recipe(steps=args.steps)
    frames = read_lake(LakeStorage(root=str(args.lake)))
    pixels, ok = decode_images(frames.raw.select(POINTER_COLUMNS).rows(), recipe.image_px, 2)
    ingested = frames.raw.filter(pl.Series(ok)).select("uid", "caption")
    pixels = pixels[ok]
    test = build_testset(recipe.image_px, 100, 400)
    background = np.array([list(COLOURS).index(s.background) for s in test_scenes(400, max_objects=1, offset=ZEROSHOT_OFFSET)])
    row_of = dict(zip(ingested["uid"].to_list(), range(ingested.height)))
    sets = build_training_sets(ingested, frames.scored, frames.manifest, args.seed, ("curated", "curated_alt_text", "all_raw"))
    print(f"{'training set':18s} {'pairs':>6s} {'zero-shot colour':>17s} {'errors':>7s} {'of them, the background':>24s} {'captions naming a background':>29s}")
    for name, frame in sets.items():
        frame = frame.filter(pl.col("uid").is_in(list(row_of)))
        model, tokenizer, _ = train(pixels[[row_of[u] for u in frame["uid"]]], frame["caption"].to_list(), recipe, args.seed)
        with torch.inference_mode():
            images = _embed(model, tokenizer, pixels=test.zeroshot_pixels).numpy()
            _, colour_cls = zeroshot_classes(_embed(model, tokenizer, texts=ZEROSHOT_PROMPTS).numpy())
        pred = (images @ colour_cls.T).argmax(1)
        wrong = pred != test.colours
        on_background = float(np.mean(pred[wrong] == background[wrong])) if wrong.any() else float("nan")
        names_background = float(frame["caption"].str.contains(" background").mean())
        print(f"{name:18s} {frame.height:6d} {np.mean(~wrong):17.3f} {int(wrong.sum()):7d} {on_background:24.2f} {names_background:29.2f}", flush=True)


if __name__ == "__main__":
    main()
