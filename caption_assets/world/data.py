"""Rendered splits of the world as arrays, for training and evaluating the demo models.

Images go through what a crawl does to them (JPEG at web qualities, sometimes PNG) and are then
resized to the models' input side with bicubic resampling, which is what the models' own image
processors do to a square image at inference time.

A training split may also draw from the wide world (``wide_share``: objects from a tenth to three quarters of
the frame) and go through the augmentations a real vision model trains with (``augment``: a slight crop,
blur, sensor noise, JPEG down to quality 30); none of them moves a colour across a colour name.
"""

from __future__ import annotations

import io
import math
import multiprocessing as mp
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from caption_assets.world.scene import (VARIATIONS, WIDE_HALF_EXTENT, WORLD_PROPORTIONS, Scene, encode, render, sample_scene, scene_rng,
                                        vary_proportions)

# Disjoint seed spaces: a crawl uses split "crawl"; the models never see it.
TRAIN, TEST = "train", "test"


@dataclass
class Split:
    scenes: list[Scene]
    pixels: np.ndarray  # uint8 [N, px, px, 3]


def augment(im: Image.Image, rng: random.Random) -> Image.Image:
    """What a real vision model's training sees (issue 22): a crop of up to 3% a side (objects keep their slots;
    the wide world keeps 3% free at the frame), Gaussian blur, sensor noise, and JPEG from quality 30."""
    s = im.width
    if rng.random() < 0.5:
        box = [rng.uniform(0, 0.03) * s for _ in range(4)]
        im = im.resize((s, s), Image.Resampling.BICUBIC, box=(box[0], box[1], s - box[2], s - box[3]))
    if rng.random() < 0.35:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5) * s / 200))
    if rng.random() < 0.35:
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 10), (s, s, 1))
        im = Image.fromarray(np.clip(np.asarray(im, np.float32) + noise, 0, 255).astype(np.uint8))
    if rng.random() < 0.85:
        im = Image.open(io.BytesIO(encode(im, "JPEG", quality=rng.randint(30, 95)))).convert("RGB")
    return im


@dataclass(frozen=True)
class Draws:
    """How a split draws its scenes and pictures beyond the world's own way (a training split's knobs; see
    ``render_split``). The defaults draw the world."""

    wide_share: float = 0.0
    augmented: bool = False
    size_bias: float | tuple[float, ...] = 1.0  # a tuple: each wide scene takes one of them
    proportion_share: float = 0.0
    variation: str = "proportions"  # a key of ``VARIATIONS``
    max_half_extent: float = WIDE_HALF_EXTENT[1]


def _one(args: tuple[str, int, int, int, int, Draws]) -> tuple[Scene, np.ndarray]:
    split, seed, index, px, max_objects, d = args
    rng = scene_rng(split, seed, index)
    pick = random.Random(f"codec:{split}:{seed}:{index}")
    wide = d.wide_share > 0 and random.Random(f"wide:{split}:{seed}:{index}").random() < d.wide_share
    bias = d.size_bias if isinstance(d.size_bias, (int, float)) else random.Random(f"bias:{split}:{seed}:{index}").choice(d.size_bias)
    scene = sample_scene(rng, max_objects=max_objects, wide=wide, size_bias=bias, max_half_extent=d.max_half_extent)
    shapes = random.Random(f"proportions:{split}:{seed}:{index}")
    varied = d.proportion_share > 0 and shapes.random() < d.proportion_share
    im = render(scene, vary_proportions(shapes, VARIATIONS[d.variation]) if varied else WORLD_PROPORTIONS)
    if d.augmented:
        im = augment(im, pick)
    elif pick.random() < 0.8:
        im = Image.open(io.BytesIO(encode(im, "JPEG", quality=pick.randint(60, 95)))).convert("RGB")
    return scene, np.asarray(im.resize((px, px), Image.Resampling.BICUBIC), dtype=np.uint8)


def render_split(split: str, n: int, *, seed: int = 0, px: int = 64, max_objects: int = 3, workers: int = 2,
                 wide_share: float = 0.0, augmented: bool = False, size_bias: float | tuple[float, ...] = 1.0, proportion_share: float = 0.0,
                 variation: str = "proportions", max_half_extent: float = WIDE_HALF_EXTENT[1]) -> Split:
    """``n`` scenes of ``split`` rendered and resized to ``px``; deterministic for its arguments.
    ``wide_share`` of them come from the wide world, their object sizes skewed by ``size_bias`` (one bias, or one
    picked per scene from a tuple: small and large both) up to ``max_half_extent`` (``sample_wide_scene``);
    ``proportion_share`` of them draw their shapes in other proportions, from the ranges ``variation`` names
    (``vary_proportions``); ``augmented`` sends every image through ``augment``."""
    d = Draws(wide_share, augmented, size_bias, proportion_share, variation, max_half_extent)
    jobs = [(split, seed, i, px, max_objects, d) for i in range(n)]
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


def train_in_stages(name: str, train: Callable, out: Path, stages: tuple, start: int, log: Callable[[str], None]) -> dict:
    """Run ``stages`` (train configs with ``init_from``) in order into ``out`` with ``train(cfg, out)``, each going on
    from what the last one saved; ``start`` > 0 goes on from what is already at ``out``. Both demo vision models train
    this way. Returns one report per stage run (``stage_1``, ...)."""
    reports = {}
    for i, cfg in enumerate(stages[start:], start=start):
        if i > 0:
            cfg = replace(cfg, init_from=str(out))
        log(f"{name} stage {i + 1}/{len(stages)}: {cfg.steps} steps at lr {cfg.lr}, wide share {cfg.wide_share}, size bias {cfg.size_bias}, "
            f"proportion share {cfg.proportion_share} ({cfg.variation}), largest half-extent {cfg.max_half_extent}, seed {cfg.seed}")
        reports[f"stage_{i + 1}"] = train(cfg, out)
    return reports
