"""Test-split figures for the demo models, measured through the product's own loaders.

The images go the way a crawl's do (rendered at their own size, JPEG-encoded, decoded, then the
model's own preprocessing), so these are the figures the pipeline actually gets.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from caption_assets.world.captions import canonical, names_every_object, paraphrase, wrong_attribute
from caption_assets.world.data import TEST
from caption_assets.world.scene import COLOURS, SHAPES, Scene, encode, render, sample_scene, scene_rng


def test_scenes(n: int, *, seed: int = 0, max_objects: int = 3, offset: int = 0, wide: bool = False) -> list[Scene]:
    """Held-out scenes: the classic world (what the crawls draw) or the wide one (objects 0.1-0.75 of the frame)."""
    offset += 500_000 if wide else 0
    return [sample_scene(scene_rng(TEST, seed, offset + i), max_objects=max_objects, wide=wide) for i in range(n)]


def as_crawled(scene: Scene) -> Image.Image:
    """The image as the pipeline sees it: rendered, JPEG-encoded at q90, decoded."""
    return Image.open(io.BytesIO(encode(render(scene), "JPEG", 90))).convert("RGB")


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U)."""
    scores = np.concatenate([pos, neg])
    ranks = np.empty(len(scores))
    order = scores.argsort(kind="mergesort")
    ranks[order] = np.arange(1, len(scores) + 1)
    for v in np.unique(scores):  # average ranks of ties
        m = scores == v
        if m.sum() > 1:
            ranks[m] = ranks[m].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


@torch.inference_mode()
def _clip_embed(model, preprocess, tokenizer, images: Sequence[Image.Image], texts: Sequence[str], batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    img = [F.normalize(model.encode_image(torch.stack([preprocess(im) for im in images[i : i + batch]])), dim=-1) for i in range(0, len(images), batch)]
    txt = [F.normalize(model.encode_text(tokenizer(list(texts[i : i + batch]))), dim=-1) for i in range(0, len(texts), batch)]
    cat = lambda xs: torch.cat(xs).float().numpy() if xs else np.zeros((0, 1), np.float32)  # noqa: E731
    return cat(img), cat(txt)


ZEROSHOT_PROMPTS = [f"a {c} {s}" for s in SHAPES for c in COLOURS]  # shape-major grid


def zeroshot_classes(prompt_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shape and colour class embeddings from the embedded ``ZEROSHOT_PROMPTS`` (a prompt ensemble: each class is
    the mean over the other attribute, renormalised)."""
    grid = prompt_emb.reshape(len(SHAPES), len(COLOURS), -1)
    shape_cls, colour_cls = grid.mean(1), grid.mean(0)
    return shape_cls / np.linalg.norm(shape_cls, axis=1, keepdims=True), colour_cls / np.linalg.norm(colour_cls, axis=1, keepdims=True)


def zeroshot_accuracy(img: np.ndarray, prompt_emb: np.ndarray, singles: Sequence[Scene]) -> tuple[float, float]:
    """Shape and colour accuracy of single-object images (embedded, normalised) against the embedded ``ZEROSHOT_PROMPTS``."""
    shape_cls, colour_cls = zeroshot_classes(prompt_emb)
    shape_acc = float(np.mean([SHAPES[i] == s.objects[0].shape for i, s in zip((img @ shape_cls.T).argmax(1), singles)]))
    colour_acc = float(np.mean([list(COLOURS)[i] == s.objects[0].colour for i, s in zip((img @ colour_cls.T).argmax(1), singles)]))
    return shape_acc, colour_acc


@lru_cache(maxsize=8)
def _crawled_singles(n: int, seed: int, wide: bool) -> tuple[list[Scene], list[Image.Image]]:
    """Held-out single-object scenes and their crawled images, rendered once per process (a learning curve asks often)."""
    singles = test_scenes(n, seed=seed, max_objects=1, wide=wide)
    return singles, [as_crawled(s) for s in singles]


def zeroshot_on_singles(model, preprocess, tokenizer, prompt_emb: np.ndarray, n: int, seed: int = 0, wide: bool = False) -> tuple[float, float]:
    """Zero-shot (shape, colour) accuracy on ``n`` held-out single objects against the embedded ``ZEROSHOT_PROMPTS``."""
    singles, images = _crawled_singles(n, seed, wide)
    img, _ = _clip_embed(model, preprocess, tokenizer, images, [])
    return zeroshot_accuracy(img, prompt_emb, singles)


def clip_figures(model, preprocess, tokenizer, n: int = 400, seed: int = 0, wide: bool = False) -> dict[str, float]:
    """Zero-shot shape/colour accuracy (single objects, prompt ensembles), correct-vs-misaligned ROC AUC,
    and how often the true caption beats a one-attribute-wrong one (multi-object scenes)."""
    _, ptxt = _clip_embed(model, preprocess, tokenizer, [], ZEROSHOT_PROMPTS)
    shape_acc, colour_acc = zeroshot_on_singles(model, preprocess, tokenizer, ptxt, n, seed, wide)

    scenes = test_scenes(n, seed=seed, offset=100_000, wide=wide)
    rng = random.Random(f"clip-eval:{seed}")
    true = [paraphrase(s, rng) for s in scenes]
    other = [canonical(scenes[(i + 1 + rng.randrange(n - 1)) % n]) for i in range(n)]
    wrong = [wrong_attribute(s, rng)[0] for s in scenes]
    img, txt = _clip_embed(model, preprocess, tokenizer, [as_crawled(s) for s in scenes], true + other + wrong)
    t, o, w = txt[:n], txt[n : 2 * n], txt[2 * n :]
    s_true, s_other, s_wrong = (img * t).sum(1), (img * o).sum(1), (img * w).sum(1)
    return {
        "zeroshot_shape_acc": shape_acc,
        "zeroshot_colour_acc": colour_acc,
        "misaligned_auc": roc_auc(s_true, s_other),
        "beats_wrong_attribute": float(np.mean(s_true > s_wrong)),
        "n_test": n,
    }


def captioner_figures(captioner, n: int = 300, seed: int = 0, wide: bool = False) -> dict[str, object]:
    """Greedy captions naming every object's colour and shape; diverse-beam candidates distinct and well-formed.

    ``captioner`` is a loaded ``resources.Captioner`` (its own image processor and generate call)."""
    from resources.captioner import Captioner

    scenes = test_scenes(n, seed=seed, offset=200_000, wide=wide)
    pixels = torch.stack([captioner._pixels(as_crawled(s)) for s in scenes])
    greedy = Captioner(**{**captioner.model_dump(), "decoding": "greedy", "num_candidates": 1})
    greedy.load()
    caps = [c[0] for b in range(0, n, 64) for c in greedy.generate(pixels[b : b + 64])]
    correct = [names_every_object(c, s.objects) for c, s in zip(caps, scenes)]
    k = min(n, 60)
    dbs = Captioner(**{**captioner.model_dump(), "decoding": "diverse_beam"})
    dbs.load()
    cands = dbs.generate(pixels[:k])
    distinct = float(np.mean([len(set(c)) == len(c) for c in cands]))
    well_formed = float(np.mean([names_every_object(x, s.objects) for c, s in zip(cands, scenes[:k]) for x in c]))
    return {
        "greedy_names_every_object": float(np.mean(correct)),
        "dbs_all_distinct": distinct,
        "dbs_candidates_correct": well_formed,
        "n_test": n,
        "examples": [{"truth": canonical(s, word=False), "greedy": c, "diverse_beam": cs} for s, c, cs in zip(scenes[:5], caps[:5], cands[:5])],
    }


def clip_checkpoint_figures(model, step: int, n: int = 200) -> dict[str, float]:
    """Zero-shot shape and colour on held-out single objects of both worlds, for ``train_clip``'s learning curve."""
    import open_clip

    px = model.visual.image_size
    preprocess = open_clip.image_transform(px if isinstance(px, int) else px[0], is_train=False)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=model.context_length)  # what get_tokenizer builds for the world CLIP
    _, prompts = _clip_embed(model, preprocess, tokenizer, [], ZEROSHOT_PROMPTS)
    out: dict[str, float] = {}
    for world, wide in (("classic", False), ("wide", True)):
        shape, colour = zeroshot_on_singles(model, preprocess, tokenizer, prompts, n, wide=wide)
        out[f"{world}_shape"], out[f"{world}_colour"] = round(shape, 3), round(colour, 3)
    return out
