"""The clean held-out test set of ``curation_eval`` and the six figures measured on it.

Scenes come from the world's TEST split (a seed space no crawl and no demo model ever drew from),
rendered and JPEG-encoded the way a crawl's images are, then shrunk to the recipe's input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from caption_assets.world.captions import canonical
from caption_assets.world.evaluate import ZEROSHOT_PROMPTS, as_crawled, test_scenes, zeroshot_classes
from caption_assets.world.scene import COLOURS, SHAPES, Scene
from caption_assets.world.train_clip import normalise_pixels

METRICS = ("t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5", "zeroshot_shape_acc", "zeroshot_colour_acc")
HEADLINE = "t2i_r1"
# Offsets inside the TEST split, apart from the ones the demo models' own figures use (0, 100k, 200k).
RETRIEVAL_OFFSET, ZEROSHOT_OFFSET = 300_000, 400_000


@dataclass
class TestSet:
    retrieval_pixels: np.ndarray  # uint8 [N, px, px, 3], multi-object scenes
    retrieval_captions: list[str]  # one reference caption each (canonical)
    zeroshot_pixels: np.ndarray  # single-object scenes
    shapes: np.ndarray  # index into SHAPES per zero-shot image
    colours: np.ndarray  # index into COLOURS per zero-shot image


def shrink(im: Image.Image, px: int) -> np.ndarray:
    """Centre square crop, bicubic resize to ``px``: what every training and test image goes through."""
    w, h = im.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return np.asarray(im.convert("RGB").resize((px, px), Image.Resampling.BICUBIC, box=box), dtype=np.uint8)


def build_testset(px: int, n_retrieval: int = 500, n_zeroshot: int = 400, seed: int = 0) -> TestSet:
    gallery: list[Scene] = test_scenes(n_retrieval, seed=seed, offset=RETRIEVAL_OFFSET)
    singles: list[Scene] = test_scenes(n_zeroshot, seed=seed, max_objects=1, offset=ZEROSHOT_OFFSET)
    pix = lambda scenes: np.stack([shrink(as_crawled(s), px) for s in scenes])  # noqa: E731
    colours = list(COLOURS)
    return TestSet(
        pix(gallery), [canonical(s) for s in gallery], pix(singles),
        np.array([SHAPES.index(s.objects[0].shape) for s in singles]), np.array([colours.index(s.objects[0].colour) for s in singles]),
    )


@torch.inference_mode()
def _embed(model, tokenizer, pixels: np.ndarray | None = None, texts: list[str] | None = None, batch: int = 256) -> torch.Tensor:
    if pixels is not None:
        return torch.cat([F.normalize(model.encode_image(normalise_pixels(pixels[i : i + batch])), dim=-1) for i in range(0, len(pixels), batch)])
    return torch.cat([F.normalize(model.encode_text(tokenizer(texts[i : i + batch])), dim=-1) for i in range(0, len(texts), batch)])


def recall_at(sim: torch.Tensor, k: int) -> float:
    """Fraction of rows whose own column (the diagonal) ranks within the top ``k``."""
    own = sim.diagonal().unsqueeze(1)
    rank = (sim > own).sum(1)  # ties count in the query's favour, as in open_clip's eval
    return float((rank < k).float().mean())


def measure(model, tokenizer, test: TestSet) -> dict[str, float]:
    """The six figures of ``METRICS`` for one trained model."""
    img = _embed(model, tokenizer, pixels=test.retrieval_pixels)
    txt = _embed(model, tokenizer, texts=test.retrieval_captions)
    sim = img @ txt.T  # [images, texts]
    out = {"t2i_r1": recall_at(sim.T, 1), "t2i_r5": recall_at(sim.T, 5), "i2t_r1": recall_at(sim, 1), "i2t_r5": recall_at(sim, 5)}
    # Zero-shot with the same prompt ensembles as the demo models' own figures (world/evaluate.py).
    shape_cls, colour_cls = zeroshot_classes(_embed(model, tokenizer, texts=ZEROSHOT_PROMPTS).numpy())
    zimg = _embed(model, tokenizer, pixels=test.zeroshot_pixels).numpy()
    out["zeroshot_shape_acc"] = float(((zimg @ shape_cls.T).argmax(1) == test.shapes).mean())
    out["zeroshot_colour_acc"] = float(((zimg @ colour_cls.T).argmax(1) == test.colours).mean())
    return out
