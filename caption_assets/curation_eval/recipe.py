"""The one fixed training recipe of ``curation_eval``: a small contrastive model trained from scratch, then tested.

DataComp's rule, in miniature: the architecture, the number of samples seen, the optimiser and its
schedule are the same for every training set; only the (image, caption) pairs differ. So a difference
in the test figures is a difference in the data. Images are decoded once to small uint8 arrays; the
captions are tokenised once; the training loop is plain InfoNCE in both directions.

Two models: ``bag`` (default; ``bow_clip.py``: bag-of-words text tower, locked random image features, a
trained head; seconds per run, and it learns from a few hundred pairs) and ``open_clip`` (a small open_clip
ViT + text transformer trained end to end; minutes per run, for crawls of thousands of pairs).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch loads when a model is trained, not when the definitions import the recipe
    import torch

EVAL_CLIP_NAME = "curation-eval-clip"
EVAL_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 96, "patch_size": 8, "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2, "mlp_ratio": 2.0},
}


BAG_CONFIG = {"embed_dim": 64, "image_head_hidden": 256, "random_conv_width": 32, "text": "words + adjacent word pairs of the training captions"}
MODELS = ("bag", "open_clip")
DEFAULT_LR = {"bag": 2e-3, "open_clip": 1e-3}


@dataclass(frozen=True)
class Recipe:
    """Everything that is held fixed across training sets (recorded with every result row)."""

    steps: int = 300
    batch_size: int = 64
    lr: float | None = None  # default: DEFAULT_LR of the model
    weight_decay: float = 0.1
    warmup: int = 30
    image_px: int = EVAL_CLIP_CONFIG["vision_cfg"]["image_size"]
    model: str = "bag"

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"evaluation model {self.model!r} unknown; choose from {MODELS}")
        if self.lr is None:
            object.__setattr__(self, "lr", DEFAULT_LR[self.model])

    @property
    def samples_seen(self) -> int:
        return self.steps * self.batch_size

    def describe(self) -> dict:
        config = BAG_CONFIG if self.model == "bag" else EVAL_CLIP_CONFIG
        return {**asdict(self), "samples_seen": self.samples_seen, "model": self.model, "model_config": config}


def fresh_model(recipe: Recipe, seed: int, captions: list[str]):
    """A new, randomly initialised model (seeded) and its tokenizer (``bag``: over the training captions)."""
    import torch

    torch.manual_seed(seed)
    if recipe.model == "bag":
        from caption_assets.curation_eval.bow_clip import BagClip, BagTokenizer

        tokenizer = BagTokenizer(captions)
        return BagClip(tokenizer.size, seed, BAG_CONFIG["embed_dim"], BAG_CONFIG["image_head_hidden"], BAG_CONFIG["random_conv_width"]), tokenizer
    import open_clip

    from caption_assets.clip_models import register_config, untrained_clip

    name = register_config(EVAL_CLIP_NAME, EVAL_CLIP_CONFIG)
    return untrained_clip(name), open_clip.get_tokenizer(name)


def train(pixels: np.ndarray, captions: list[str], recipe: Recipe, seed: int):
    """Train a fresh model on the pairs (``pixels`` uint8 [N, px, px, 3]); returns (model, tokenizer, seconds).

    Batches are drawn with replacement-free epochs from a seeded generator, so the number of samples
    seen is ``recipe.samples_seen`` whatever N is.
    """
    if len(captions) != len(pixels) or not len(captions):
        raise ValueError(f"need as many captions as images and at least one pair (got {len(captions)} and {len(pixels)})")
    import torch
    import torch.nn.functional as F

    from caption_assets.world.data import warmup_cosine
    from caption_assets.world.train_clip import adamw, normalise_pixels

    t0 = time.perf_counter()
    model, tokenizer = fresh_model(recipe, seed, captions)
    images = normalise_pixels(pixels)
    encode_image = model.encode_image
    if hasattr(model, "encode_features"):  # a locked image tower: its features once, not once per step
        images, encode_image = model.features(images), model.encode_features
    tokens = tokenizer(captions)
    opt = adamw(model, recipe.lr, recipe.weight_decay, fused=True)  # fused: a third less time per step on the CPU
    sched = warmup_cosine(opt, recipe.warmup, recipe.steps)
    gen = torch.Generator().manual_seed(seed)
    order = _epochs(len(captions), recipe.samples_seen, gen)
    model.train()
    for step in range(recipe.steps):
        idx = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
        img = F.normalize(encode_image(images[idx]), dim=-1)
        txt = F.normalize(model.encode_text(tokens[idx]), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
        # The same pair can appear twice in a batch when N < batch: both copies count as positives.
        target = (idx[:, None] == idx[None, :]).float()
        target = target / target.sum(1, keepdim=True)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return model, tokenizer, time.perf_counter() - t0


def _epochs(n: int, total: int, gen: torch.Generator) -> torch.Tensor:
    """Concatenated random permutations of range(n), cut to ``total`` indices."""
    import torch

    reps = -(-total // n)
    return torch.cat([torch.randperm(n, generator=gen) for _ in range(reps)])[:total]
