"""The clean held-out test set of ``curation_eval`` and the figures measured on it, per query.

Scenes come from the world's TEST split (a seed space no crawl and no demo model ever drew from),
rendered and JPEG-encoded the way a crawl's images are, then shrunk to the recipe's input size. Each
figure is measured under two phrasings of the queries and prompts: the held-out one (``phrasing.py``: no
caption source writes it; the headline) and the grammar's canonical one (suffix ``_canonical``), so the
credit a training set gets for copying the grammar's style is a measured difference. Every figure keeps
its per-query hits, for intervals over queries as well as seeds (``intervals.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from caption_assets.curation_eval.metrics import BASE_METRICS, CANONICAL, HEADLINE, METRICS  # noqa: F401 - re-exported
from caption_assets.curation_eval.phrasing import HELD_OUT_ZEROSHOT_PROMPTS, held_out_caption
from caption_assets.world.captions import canonical
from caption_assets.world.evaluate import ZEROSHOT_PROMPTS, as_crawled, test_scenes, zeroshot_classes
from caption_assets.world.scene import COLOURS, SHAPES, Scene
from caption_assets.world.train_clip import normalise_pixels

# Offsets inside the TEST split, apart from the ones the demo models' own figures use (0, 100k, 200k).
RETRIEVAL_OFFSET, ZEROSHOT_OFFSET = 300_000, 400_000


@dataclass
class TestSet:
    retrieval_pixels: np.ndarray  # uint8 [N, px, px, 3], multi-object scenes
    retrieval_captions: list[str]  # one reference caption each (canonical)
    retrieval_held_out: list[str]  # the same scenes in the held-out phrasing
    zeroshot_pixels: np.ndarray  # single-object scenes
    shapes: np.ndarray  # index into SHAPES per zero-shot image
    colours: np.ndarray  # index into COLOURS per zero-shot image


def shrink(im: Image.Image, px: int) -> np.ndarray:
    """Centre square crop, bicubic resize to ``px``: what every training and test image goes through."""
    w, h = im.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return np.asarray(im.convert("RGB").resize((px, px), Image.Resampling.BICUBIC, box=box), dtype=np.uint8)


def build_testset(px: int, n_retrieval: int = 500, n_zeroshot: int = 400, seed: int = 0,
                  draw: Callable[[Scene], Image.Image] = as_crawled, adapt: Callable[[Scene], Scene] = lambda s: s) -> TestSet:
    """``draw`` renders a scene as the model sees it (the world's renderer by default; a probe passes another);
    ``adapt`` edits each scene before it is drawn and described (a probe that draws no words drops them)."""
    gallery: list[Scene] = [adapt(s) for s in test_scenes(n_retrieval, seed=seed, offset=RETRIEVAL_OFFSET)]
    singles: list[Scene] = [adapt(s) for s in test_scenes(n_zeroshot, seed=seed, max_objects=1, offset=ZEROSHOT_OFFSET)]
    pix = lambda scenes: np.stack([shrink(draw(s), px) for s in scenes])  # noqa: E731
    colours = list(COLOURS)
    return TestSet(
        pix(gallery), [canonical(s) for s in gallery], [held_out_caption(s) for s in gallery], pix(singles),
        np.array([SHAPES.index(s.objects[0].shape) for s in singles]), np.array([colours.index(s.objects[0].colour) for s in singles]),
    )


@torch.inference_mode()
def _embed(model, tokenizer, pixels: np.ndarray | None = None, texts: list[str] | None = None, batch: int = 256) -> torch.Tensor:
    if pixels is not None:
        return torch.cat([F.normalize(model.encode_image(normalise_pixels(pixels[i : i + batch])), dim=-1) for i in range(0, len(pixels), batch)])
    return torch.cat([F.normalize(model.encode_text(tokenizer(texts[i : i + batch])), dim=-1) for i in range(0, len(texts), batch)])


def hits_at(sim: torch.Tensor, k: int) -> np.ndarray:
    """Per row: 1 when its own column (the diagonal) ranks within the top ``k``, else 0."""
    own = sim.diagonal().unsqueeze(1)
    rank = (sim > own).sum(1)  # ties count in the query's favour, as in open_clip's eval
    return (rank < k).numpy().astype(np.uint8)


def recall_at(sim: torch.Tensor, k: int) -> float:
    """Fraction of rows whose own column (the diagonal) ranks within the top ``k``."""
    return float(hits_at(sim, k).mean())


def measure(model, tokenizer, test: TestSet) -> dict[str, np.ndarray]:
    """Per-query hits (uint8) of every metric in ``METRICS`` for one trained model; a figure is their mean."""
    img = _embed(model, tokenizer, pixels=test.retrieval_pixels)
    zimg = _embed(model, tokenizer, pixels=test.zeroshot_pixels).numpy()
    out: dict[str, np.ndarray] = {}
    for suffix, captions, prompts in (("", test.retrieval_held_out, HELD_OUT_ZEROSHOT_PROMPTS), (CANONICAL, test.retrieval_captions, ZEROSHOT_PROMPTS)):
        sim = img @ _embed(model, tokenizer, texts=captions).T  # [images, texts]
        out.update({f"t2i_r1{suffix}": hits_at(sim.T, 1), f"t2i_r5{suffix}": hits_at(sim.T, 5), f"i2t_r1{suffix}": hits_at(sim, 1), f"i2t_r5{suffix}": hits_at(sim, 5)})
        # zero-shot with prompt ensembles over the other attribute (world/evaluate.py), in each phrasing
        shape_cls, colour_cls = zeroshot_classes(_embed(model, tokenizer, texts=prompts).numpy())
        out[f"zeroshot_shape_acc{suffix}"] = ((zimg @ shape_cls.T).argmax(1) == test.shapes).astype(np.uint8)
        out[f"zeroshot_colour_acc{suffix}"] = ((zimg @ colour_cls.T).argmax(1) == test.colours).astype(np.uint8)
    return out
