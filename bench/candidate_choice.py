"""Which diverse-beam candidate ``recaptioned_pairs`` should keep: the CLIP's best-of-3 or the consensus one.

    python bench/candidate_choice.py [--n 300] [--models data/demo_models]

For held-out scenes of the classic and the wide world, the shipped captioner's 3 diverse-beam candidates are scored
by the shipped world-clip, and each selection (``caption_assets.consensus.SELECTIONS``) is checked against the
truth: the share of kept candidates naming every object right. About a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--models", type=Path, default=ROOT / "data" / "demo_models", help="a folder written by scripts/train_demo_models.py")
    args = ap.parse_args()
    n = args.n
    import numpy as np
    import torch

    from caption_assets.consensus import SELECTIONS, choose
    from caption_assets.world.captions import names_every_object
    from caption_assets.world.evaluate import _clip_embed, as_crawled, test_scenes
    from resources.captioner import Captioner
    from resources.clip import load_clip

    model, pre, tok = load_clip("world-clip", str(args.models / "world-clip.pt"), "cpu", "fp32")
    cap = Captioner(model=str(args.models / "world-captioner"), device="cpu", num_workers=0, decoding="diverse_beam", num_candidates=3, beams_per_group=2, max_new_tokens=40)
    cap.load()
    for wide in (False, True):
        scenes = test_scenes(n, offset=200_000, wide=wide)
        images = [as_crawled(s) for s in scenes]
        pixels = torch.stack([cap._pixels(im) for im in images])
        cands = [c for b in range(0, n, 32) for c in cap.generate(pixels[b : b + 32])]
        image_emb, text_emb = _clip_embed(model, pre, tok, images, [c for cs in cands for c in cs])  # every candidate in one batch
        starts = np.cumsum([0] + [len(cs) for cs in cands])
        right: dict[str, list[bool]] = {sel: [] for sel in SELECTIONS}
        for i, (cs, scene) in enumerate(zip(cands, scenes)):
            scores = text_emb[starts[i] : starts[i + 1]] @ image_emb[i]
            for sel in SELECTIONS:
                right[sel].append(names_every_object(cs[choose(scores, cs, sel)], scene.objects))
        figures = ", ".join(f"{sel} {np.mean(v):.3f}" for sel, v in right.items())
        print(f"{'wide' if wide else 'classic'} world, {n} scenes: kept candidate names every object: {figures}", flush=True)


if __name__ == "__main__":
    main()
