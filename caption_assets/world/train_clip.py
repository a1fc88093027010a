"""Train the demo CLIP on the world's training split: an open_clip model from a custom config.

Contrastive (InfoNCE, both directions) with NegCLIP-style hard negatives: each image also competes
against fluent captions of itself with one attribute wrong, so the model learns which colour goes
with which shape rather than a bag of words. The result is saved as an open_clip checkpoint file plus
its model-config JSON (``<name>.json`` beside ``<name>.pt``), and loaded by ``resources.clip.load_clip`` exactly like downloaded weights.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from caption_assets.clip_models import untrained_clip
from caption_assets.world.captions import mentioned_objects, paraphrase, wrong_attribute
from caption_assets.world.data import TRAIN, Split, render_split, train_in_stages, warmup_cosine
from caption_assets.world.scene import COLOURS, SHAPES, WIDE_HALF_EXTENT

WORLD_CLIP_NAME = "world-clip"
WORLD_CLIP_CONFIG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "patch_size": 8, "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 40, "vocab_size": 49408, "width": 96, "heads": 4, "layers": 3, "mlp_ratio": 2.0},
}
# Vision towers ``ClipTrainConfig.vision`` picks, each an open_clip tower. "vit": 8 px patches at 64 px, where a
# classic-world object (13 px) spans two patches and a star reads as a ring. "resnet": open_clip's ModifiedResNet
# (the RN50 family at a sixteenth of its width), whose 3x3 convolutions see a shape's outline at any scale.
VISION_TOWERS = {
    "vit": WORLD_CLIP_CONFIG["vision_cfg"],
    "resnet": {"image_size": 96, "layers": [1, 1, 1, 1], "width": 16, "head_width": 64},
}
# Shapes are harder to see than colours at 64 px: two of the three hard negatives get a shape wrong.
NEGATIVE_KINDS = ("colour", "shape", "shape")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ClipTrainConfig:
    n_images: int = 20000
    captions_per_image: int = 3
    steps: int = 6000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 150
    # The shipped recipe (README, "The world"): half the split from the wide world, the augmentations, open_clip's
    # ResNet tower at 96 px and the tag head. The ViT on the classic world stalled at zero-shot shape 0.51; this one
    # was at 0.79 after 3,600 steps and 0.98 after 6,000.
    wide_share: float = 0.5
    augmented: bool = True
    vision: str = "resnet"  # a key of VISION_TOWERS
    # Tag2Text-style tag supervision: a linear head on the image embedding predicts the (colour, shape) tags parsed
    # from the image's own caption (``caption_tags``), weighted so; the head is dropped when the model is saved.
    tag_weight: float = 5.0
    # Later stages (``CLIP_STAGES``): go on from a saved checkpoint of the same architecture, on a split whose wide
    # scenes skew small (``size_bias``, see ``sample_wide_scene``).
    init_from: str = ""
    size_bias: float | tuple[float, ...] = 1.0
    proportion_share: float = 0.0  # share of images whose shapes are drawn in other proportions (``vary_proportions``)
    variation: str = "proportions"  # which ranges those proportions come from (``VARIATIONS``)
    max_half_extent: float = WIDE_HALF_EXTENT[1]  # the wide scenes' largest half-extent; the world's by default
    seed: int = 0

    @property
    def model_config(self) -> dict:
        return {**WORLD_CLIP_CONFIG, "vision_cfg": VISION_TOWERS[self.vision]}


# The shipped recipe: the ResNet + tag-head run above, then stages that go on from it at falling rates on fresh
# splits (other seeds) whose wide scenes skew small (``size_bias`` 2, then 3: a lone object under 0.13 of the frame
# one time in four, then two in five, instead of one in twelve), for the tenth-of-the-frame objects the first stage
# rarely saw alone; the fifth also draws half its images' shapes in other proportions (``vary_proportions``).
# They took the out-of-renderer probe at a tenth of the frame from 0.48 to 0.64, 0.75, 0.79 and 0.84 (README). The
# sixth turns shapes, lets squares fill their box and diamonds be as wide as tall, draws objects up to 0.84 of the
# frame and skews each wide scene small or large (``variation="turned"``, ``max_half_extent``, ``size_bias`` (3, 0.5)):
# at three quarters of the frame bench/sdf_probe.py's distance fields went from 0.78 to 0.94, and a tenth of the
# frame on the first probe to 0.88.
CLIP_STAGES = (
    ClipTrainConfig(),
    ClipTrainConfig(steps=3000, lr=5e-4, warmup=100, size_bias=2.0, seed=1),
    ClipTrainConfig(steps=3000, lr=3e-4, warmup=100, size_bias=3.0, seed=2),
    ClipTrainConfig(steps=3000, lr=2e-4, warmup=100, size_bias=3.0, seed=3),
    ClipTrainConfig(steps=3000, lr=2e-4, warmup=100, size_bias=3.0, proportion_share=0.5, seed=4),
    ClipTrainConfig(steps=2500, lr=1.5e-4, warmup=100, size_bias=(3.0, 0.5), proportion_share=0.6, variation="turned", max_half_extent=0.42, seed=5),
)


def normalise_pixels(pixels: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255)
    mean, std = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def adamw(model: torch.nn.Module, lr: float, weight_decay: float, fused: bool = False) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on embeddings, norms, biases or the logit scale), as open_clip trains."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=lr, fused=fused)


TAGS = [f"{c} {s}" for c in COLOURS for s in SHAPES] + list(SHAPES) + list(COLOURS)


def caption_tags(captions: list[str]) -> torch.Tensor:
    """Multi-hot ``TAGS`` parsed from each caption (``mentioned_objects``): every (colour, shape) it names, and
    those shapes and colours on their own. Parsed from the text the image is paired with, as Tag2Text parses its
    tags, so the head learns what the captions say and nothing the captions do not."""
    index = {t: i for i, t in enumerate(TAGS)}
    out = torch.zeros(len(captions), len(TAGS))
    for row, text in enumerate(captions):
        for colour, shape in mentioned_objects(text):
            out[row, [index[f"{colour} {shape}"], index[shape], index[colour]]] = 1.0
    return out


def caption_bank(split: Split, k: int, seed: int, tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``k`` true paraphrases and hard negatives per image (``NEGATIVE_KINDS``: one attribute wrong each), tokenised
    once, and the tags of each image's first paraphrase."""
    rng = random.Random(f"captions:{seed}")
    positives, negatives = [], []
    for scene in split.scenes:
        positives += [paraphrase(scene, rng) for _ in range(k)]
        negatives += [wrong_attribute(scene, rng, kind=kind)[0] for kind in NEGATIVE_KINDS]
    n = len(split.scenes)
    return tokenizer(positives).view(n, k, -1), tokenizer(negatives).view(n, len(NEGATIVE_KINDS), -1), caption_tags(positives[::k])


def train_clip(cfg: ClipTrainConfig, out: Path, log: Callable[[str], None] = print, data: Split | None = None,
               on_checkpoint: Callable[[torch.nn.Module, int], dict] | None = None, every: int = 300) -> dict:
    """Train, save ``out`` (checkpoint) and ``out.with_suffix('.json')`` (config); returns a report.

    ``on_checkpoint(model, step)`` runs every ``every`` steps and at the end (model in eval mode, inference only);
    what it returns goes into the report's ``checkpoints``: a learning curve on held-out figures."""
    import open_clip

    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    model_config = cfg.model_config
    px = model_config["vision_cfg"]["image_size"]
    data = data or render_split(TRAIN, cfg.n_images, seed=cfg.seed, px=px, wide_share=cfg.wide_share, augmented=cfg.augmented, size_bias=cfg.size_bias,
                               proportion_share=cfg.proportion_share, variation=cfg.variation, max_half_extent=cfg.max_half_extent)
    t_render = time.perf_counter() - t0
    # The architecture travels as open_clip model-config JSON beside the checkpoint, named like it.
    out.parent.mkdir(parents=True, exist_ok=True)
    name, config_path = out.stem, out.with_suffix(".json")
    config_path.write_text(json.dumps(model_config, indent=2))
    open_clip.add_model_config(config_path)
    model = untrained_clip(name)
    if cfg.init_from:  # the saved weights are fp16; load_state_dict casts them into the fp32 model
        model.load_state_dict(torch.load(cfg.init_from, map_location="cpu", weights_only=False)["state_dict"])
    tokenizer = open_clip.get_tokenizer(name)
    pos, neg, tags = caption_bank(data, cfg.captions_per_image, cfg.seed, tokenizer)
    images = normalise_pixels(data.pixels)
    head = torch.nn.Linear(model_config["embed_dim"], len(TAGS))  # training only: not part of the saved model
    opt = adamw(torch.nn.ModuleList([model, head]) if cfg.tag_weight else model, cfg.lr, cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    n = len(data.scenes)
    curve, checkpoints = [], []
    for step in range(cfg.steps):
        idx = torch.randperm(n, generator=gen)[: cfg.batch_size]
        which = torch.randint(cfg.captions_per_image, (len(idx),), generator=gen)
        img = F.normalize(model.encode_image(images[idx]), dim=-1)
        b = len(idx)
        txt = F.normalize(model.encode_text(torch.cat([pos[idx, which], *neg[idx].unbind(1)])), dim=-1)
        scale = model.logit_scale.exp().clamp(max=100)
        logits = scale * img @ txt.T  # [B, B + B * len(NEGATIVE_KINDS)]: true captions, then the hard negatives
        labels = torch.arange(b)
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, :b].T, labels)) / 2
        if cfg.tag_weight:
            loss = loss + cfg.tag_weight * F.binary_cross_entropy_with_logits(head(img), tags[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            acc = float((logits.argmax(1) == labels).float().mean())
            curve.append({"step": step, "loss": round(loss.item(), 4), "batch_i2t_acc": round(acc, 3)})
            log(f"  clip step {step:5d}/{cfg.steps}  loss {loss.item():.3f}  batch i2t acc {acc:.2f}  ({time.perf_counter() - t0:.0f}s)")
        if on_checkpoint and ((step + 1) % every == 0 or step == cfg.steps - 1):
            model.eval()
            with torch.inference_mode():
                checkpoints.append({"step": step + 1, **on_checkpoint(model, step + 1)})
            log(f"  clip checkpoint {checkpoints[-1]}")
            model.train()
    model.eval()
    report = {"config": asdict(cfg), "model_config": model_config, "render_seconds": round(t_render, 1),
              "train_seconds": round(time.perf_counter() - t0 - t_render, 1), "curve": curve, "checkpoints": checkpoints}
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    tmp = out.with_suffix(".tmp")
    torch.save({"state_dict": state, "note": "trained on the procedural world (caption_assets/world)", "train_config": asdict(cfg)}, tmp)
    tmp.replace(out)
    return report


def train_clip_staged(out: Path, stages: tuple[ClipTrainConfig, ...] = CLIP_STAGES, *, start: int = 0, log: Callable[[str], None] = print,
                      on_checkpoint: Callable[[torch.nn.Module, int], dict] | None = None) -> dict:
    """Run ``stages`` in order into ``out``, each going on from the checkpoint the last one saved (``train_in_stages``);
    ``start`` > 0 goes on from the checkpoint already at ``out``. Returns one report per stage run."""
    return train_in_stages("clip", lambda cfg, out: train_clip(cfg, out, log=log, on_checkpoint=on_checkpoint), out, stages, start, log)
