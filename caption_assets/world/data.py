"""Rendered splits of the world as arrays, for training and evaluating the demo models.

Images go through what a crawl does to them (JPEG at web qualities, sometimes PNG) and are then
resized to the models' input side with bicubic resampling, which is what the models' own image
processors do to a square image at inference time.
"""

from __future__ import annotations

import io
import math
import multiprocessing as mp
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

from caption_assets.world.scene import Scene, encode, render, sample_scene, scene_rng

# Disjoint seed spaces: a crawl uses split "crawl"; the models never see it.
TRAIN, TEST = "train", "test"


@dataclass
class Split:
    scenes: list[Scene]
    pixels: np.ndarray  # uint8 [N, px, px, 3]


def _one(args: tuple[str, int, int, int, int]) -> tuple[Scene, np.ndarray]:
    split, seed, index, px, max_objects = args
    rng = scene_rng(split, seed, index)
    scene = sample_scene(rng, max_objects=max_objects)
    im = render(scene)
    pick = random.Random(f"codec:{split}:{seed}:{index}")
    if pick.random() < 0.8:
        im = Image.open(io.BytesIO(encode(im, "JPEG", quality=pick.randint(60, 95)))).convert("RGB")
    return scene, np.asarray(im.resize((px, px), Image.Resampling.BICUBIC), dtype=np.uint8)


def render_split(split: str, n: int, *, seed: int = 0, px: int = 64, max_objects: int = 3, workers: int = 2) -> Split:
    """``n`` scenes of ``split`` rendered and resized to ``px``; deterministic for (split, seed, n, px)."""
    jobs = [(split, seed, i, px, max_objects) for i in range(n)]
    if workers > 1 and n >= 256:
        with mp.get_context("fork").Pool(workers) as pool:
            rows = pool.map(_one, jobs, chunksize=64)
    else:
        rows = [_one(j) for j in jobs]
    return Split([r[0] for r in rows], np.stack([r[1] for r in rows]) if rows else np.zeros((0, px, px, 3), np.uint8))


def warmup_cosine(opt, warmup: int, steps: int):
    """Linear warm-up, then cosine decay to zero: the schedule both demo models train with."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
