"""The demo models on shapes the world did not draw, at several scales (issue 22's probe).

    python bench/probe_models.py [--per-scale 48] [--models data/demo_models] [--renderer skimage|matplotlib|sdf|glyph]

One shape, centred, drawn by ``bench/verdict_probe.py``'s scikit-image renderer (anti-aliased, speckled
background, jittered colours, JPEG q75), or by ``bench/mpl_probe.py``'s matplotlib markers (their own
proportions, blotched background, JPEG 60-90), or by ``bench/sdf_probe.py``'s distance fields (proportions drawn
per image, turned up to 10 degrees, uneven light, WebP 50-90), or by ``bench/glyph_probe.py``'s font glyphs
(FreeType, four fonts' designs, a gradient background, JPEG 55-90), at widths from a tenth to three quarters of the frame. For each
width: how often the world-captioner's greedy caption names the shape and the colour right (and nothing
more), and the world-clip's zero-shot shape and colour accuracy (the prompt ensembles of ``world/evaluate.py``).
Both models are loaded by the product's loaders from ``data/demo_models``.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WIDTHS = (0.1, 0.2, 0.35, 0.5, 0.75)
RENDERERS = ("skimage", "matplotlib", "sdf", "glyph")


def probe_drawer(renderer: str):
    """The ``draw(scene, rng, width)`` of one of ``RENDERERS``: the bench and the demo-model tests draw through it."""
    from bench.glyph_probe import draw_glyph
    from bench.mpl_probe import draw_matplotlib
    from bench.sdf_probe import draw_sdf
    from bench.verdict_probe import draw_probe

    return {"skimage": draw_probe, "matplotlib": draw_matplotlib, "sdf": draw_sdf, "glyph": draw_glyph}[renderer]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-scale", type=int, default=48)
    ap.add_argument("--models", type=Path, default=ROOT / "data" / "demo_models", help="a folder written by scripts/train_demo_models.py")
    ap.add_argument("--renderer", choices=RENDERERS, default="skimage")
    args = ap.parse_args()
    import torch

    from caption_assets.world.captions import names_every_object
    from caption_assets.world.evaluate import ZEROSHOT_PROMPTS, _clip_embed, zeroshot_accuracy
    from caption_assets.world.scene import sample_scene
    from resources.captioner import Captioner
    from resources.clip import load_clip

    model, preprocess, tokenizer = load_clip("world-clip", str(args.models / "world-clip.pt"), "cpu", "fp32")
    captioner = Captioner(model=str(args.models / "world-captioner"), device="cpu", num_workers=0, decoding="greedy", num_candidates=1, max_new_tokens=40)
    captioner.load()
    _, prompts = _clip_embed(model, preprocess, tokenizer, [], ZEROSHOT_PROMPTS)
    rng = np.random.default_rng(22)
    draw = probe_drawer(args.renderer)
    print(f"{'width':>6} {'captioner':>10} {'clip shape':>11} {'clip colour':>12}   (n={args.per_scale} per width; chance: shape 1/8, colour 1/8)")
    for width in WIDTHS:
        scenes = [sample_scene(random.Random(f"probe-models:{width}:{i}"), max_objects=1, word_rate=0.0) for i in range(args.per_scale)]
        images = [draw(s, rng, width=width) for s in scenes]
        pixels = torch.stack([captioner._pixels(im) for im in images])
        caps = [c[0] for b in range(0, len(images), 32) for c in captioner.generate(pixels[b : b + 32])]
        named = np.mean([names_every_object(c, s.objects) for c, s in zip(caps, scenes)])
        img, _ = _clip_embed(model, preprocess, tokenizer, images, [])
        shape, colour = zeroshot_accuracy(img, prompts, scenes)
        print(f"{width:6.2f} {named:10.2f} {shape:11.2f} {colour:12.2f}   e.g. {scenes[0].objects[0].colour} {scenes[0].objects[0].shape} -> {caps[0]!r}", flush=True)


if __name__ == "__main__":
    main()
