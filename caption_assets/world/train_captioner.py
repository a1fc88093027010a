"""Train the demo captioner on the world's training split: a transformers VisionEncoderDecoder.

A small Swin encoder (4 px patches at 96 px, so small shapes stay legible; the last stages 8 px patches at 192 px, the same
token grid over four times the pixels) and a GPT-2 decoder with cross-attention, a word-level tokenizer over the world's
grammar, teacher forcing on true paraphrases (several framings, objects always in slot order, so
diverse beam search has real alternatives to find); the later stages add a tag head on the encoder, as the CLIP
trains with. Saved with ``save_pretrained`` and loaded by
``resources.captioner.load_captioner`` (``AutoModelForImageTextToText``), the production loader.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from caption_assets.world.captions import NUMBER_WORDS, PLURAL, POSITION_PHRASE, TEMPLATES, describe
from caption_assets.world.data import TRAIN, Split, render_split, train_in_stages, warmup_cosine
from caption_assets.world.scene import COLOURS, SHAPES, SIZES, WIDE_HALF_EXTENT, Scene
from caption_assets.world.train_clip import TAGS, caption_tags

SPECIALS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]


@dataclass(frozen=True)
class CaptionerTrainConfig:
    n_images: int = 20000
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1.5e-3
    weight_decay: float = 0.05
    warmup: int = 150
    hidden: int = 128
    layers: int = 3
    encoder: str = "swin"  # or "vit" (8 px patches)
    image_size: int = 96  # a tenth of the frame is ~10 px here (6 at 64 px, too few to tell a star from a cross)
    patch_size: int = 4  # Swin's; a stage that doubles it with ``image_size`` keeps the token grid (``widen_patches``)
    wide_share: float = 0.75  # of the training split from the wide world (``render_split``)
    augmented: bool = True
    init_from: str = ""  # a saved captioner to go on training (a later stage of ``CAPTIONER_STAGES``)
    size_bias: float | tuple[float, ...] = 1.0  # > 1 skews the wide scenes' objects small, < 1 large; a tuple mixes (``render_split``)
    proportion_share: float = 0.0  # share of images whose shapes are drawn in other proportions (``vary_proportions``)
    variation: str = "proportions"  # which ranges those proportions come from (``VARIATIONS``)
    max_half_extent: float = WIDE_HALF_EXTENT[1]  # the wide scenes' largest half-extent; the world's by default
    # Tag2Text-style tags, as the CLIP trains with (``train_clip.caption_tags``): a linear head on the mean of the
    # encoder's last hidden states predicts the (colour, shape) tags of the target caption, weighted so; the
    # head is not saved. It puts a direct "which shape" signal on the encoder instead of one token in forty.
    tag_weight: float = 0.0
    seed: int = 0


# The shipped recipe: 4,000 steps on a split three quarters wide, then 3,000 more at half the rate on a fresh
# split (another seed) half wide, which wins back the classic world the crawls draw without losing the wide one;
# then five stages with the tag head on fresh splits three quarters wide at falling rates, which took the
# out-of-renderer probe at a tenth of the frame from 0.42 to 0.83 (0.65, 0.75, 0.85 after the third, fifth and
# sixth), at half the frame from 0.85 to 1.00, and the wide test split from 0.71 to 0.977; then two stages on splits
# whose wide scenes skew small (``size_bias`` 2, then 1.5 at a lower rate), which took the probe at a tenth of the
# frame from 0.82 to 0.89 on 160 a width (0.845 to 0.878 on 400 more) and at three quarters from 0.94 to 0.97; then
# two stages skewed small whose splits draw half their images' shapes in other proportions (``vary_proportions``),
# which took it to 0.91 (0.92 on 400 more) and three quarters to 0.99, and matplotlib's markers, a renderer no stage
# saw, at a tenth from 0.79 to 0.87; then two whose shapes may be turned, fill their box (squares) or be as wide as
# they are tall (diamonds), with objects up to 0.84 of the frame and the wide scenes skewed small or large
# (``variation="turned"``, ``max_half_extent``, a tuple of ``size_bias``), which took three quarters of the frame on
# matplotlib's markers from 0.86 to 0.96 and on bench/sdf_probe.py's distance fields from 0.82 to 0.97, where
# squares wider than any the world drew had been given the background's colour (README); then two at 192 px with 8 px
# patches (``widen_patches``: the same 24x24 tokens, each seeing four times the pixels), the second skewed smaller,
# which took matplotlib's markers at a tenth of the frame from 0.84 to 0.88 (0.82 to 0.86 on 400) and at a fifth from
# 0.86 to 0.89 (0.91 to 0.95), where its diamond and its fat plus are ~19 px instead of ~10.
CAPTIONER_STAGES = (
    CaptionerTrainConfig(),
    CaptionerTrainConfig(steps=3000, lr=7.5e-4, warmup=100, wide_share=0.5, seed=1),
    CaptionerTrainConfig(steps=4000, lr=7.5e-4, warmup=100, tag_weight=5.0, seed=2),
    CaptionerTrainConfig(steps=3000, lr=5e-4, warmup=100, tag_weight=5.0, seed=3),
    CaptionerTrainConfig(steps=4000, lr=4e-4, warmup=100, tag_weight=5.0, seed=4),
    CaptionerTrainConfig(steps=4000, lr=3e-4, warmup=100, tag_weight=5.0, seed=5),
    CaptionerTrainConfig(steps=4000, lr=3e-4, warmup=100, tag_weight=5.0, seed=6),
    CaptionerTrainConfig(steps=4000, lr=3e-4, warmup=100, tag_weight=5.0, size_bias=2.0, seed=7),
    CaptionerTrainConfig(steps=3000, lr=2e-4, warmup=100, tag_weight=5.0, size_bias=1.5, seed=8),
    CaptionerTrainConfig(steps=3000, lr=2e-4, warmup=100, tag_weight=5.0, size_bias=2.0, proportion_share=0.5, seed=9),
    CaptionerTrainConfig(steps=3000, lr=1.5e-4, warmup=100, tag_weight=5.0, size_bias=2.0, proportion_share=0.5, seed=10),
    CaptionerTrainConfig(steps=3000, lr=1.5e-4, warmup=100, tag_weight=5.0, size_bias=(2.0, 0.5), proportion_share=0.6, variation="turned",
                         max_half_extent=0.42, seed=11),
    CaptionerTrainConfig(steps=3000, lr=1e-4, warmup=100, tag_weight=5.0, size_bias=(2.5, 2.5, 0.5), proportion_share=0.6, variation="turned",
                         max_half_extent=0.42, seed=12),
    CaptionerTrainConfig(steps=3000, lr=1.5e-4, warmup=100, tag_weight=5.0, size_bias=(2.5, 2.5, 0.5), proportion_share=0.6, variation="turned",
                         max_half_extent=0.42, image_size=192, patch_size=8, seed=13),
    CaptionerTrainConfig(steps=3000, lr=1e-4, warmup=100, tag_weight=5.0, size_bias=(3.0, 3.0, 0.5), proportion_share=0.6, variation="turned",
                         max_half_extent=0.42, image_size=192, patch_size=8, seed=15),
)


def vocabulary() -> list[str]:
    words = {"a", "an", "and", ",", *COLOURS, *SHAPES, *PLURAL.values(), *SIZES, *NUMBER_WORDS.values()}
    for text in list(POSITION_PHRASE.values()) + list(TEMPLATES):
        words |= set(text.replace(",", " , ").replace("{", " ").replace("}", " ").split())
    words -= {"objs", "bg", "bga"}
    return SPECIALS + sorted(words)


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words, no space before ","
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]")


def build_model(vocab_size: int, cfg: CaptionerTrainConfig):
    from transformers import GPT2Config, SwinConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig

    if cfg.encoder == "swin":  # 4 px patches (by default), windowed attention: sees a 10 px star at 64 px input
        enc = SwinConfig(image_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.hidden // 4, depths=[2, 2, 2], num_heads=[2, 4, 8], window_size=4, mlp_ratio=2.0)
    else:
        enc = ViTConfig(image_size=cfg.image_size, patch_size=8, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers, num_attention_heads=4, intermediate_size=cfg.hidden * 2)
    dec = GPT2Config(vocab_size=vocab_size, n_positions=48, n_embd=cfg.hidden, n_layer=cfg.layers, n_head=4, add_cross_attention=True, is_decoder=True,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 1, 0, 2
    torch.manual_seed(cfg.seed)
    return VisionEncoderDecoderModel(config)


def widen_patch_kernel(weight: torch.Tensor, factor: int) -> torch.Tensor:
    """A patch-embedding kernel ``factor`` times as wide that computes on a ``factor``-times larger image what the
    old one computed on its ``factor``-fold box-downsampled copy: each weight spread evenly over a factor² block."""
    return weight.repeat_interleave(factor, 2).repeat_interleave(factor, 3) / factor**2


def widen_patches(model, patch_size: int):
    """``model`` (a Swin captioner) with patches ``patch_size`` wide, the same token grid on an input as many times
    larger, every other weight kept. The encoder then starts where it was, on a box-filtered image, and the stage
    that follows can learn what the extra pixels show (a 10 px diamond from a 10 px plus)."""
    import copy

    from transformers import VisionEncoderDecoderModel

    old = model.config.encoder.patch_size
    if patch_size % old:
        raise ValueError(f"patch size {patch_size} is not a multiple of {old}")
    config = copy.deepcopy(model.config)  # ``model`` itself stays as it was
    config.encoder.patch_size = patch_size
    state = model.state_dict()
    key = "encoder.embeddings.patch_embeddings.projection.weight"
    state[key] = widen_patch_kernel(state[key], patch_size // old)
    wider = VisionEncoderDecoderModel(config)
    wider.load_state_dict(state)
    wider.generation_config = copy.deepcopy(model.generation_config)
    return wider


def target_caption(scene: Scene, rng: random.Random) -> str:
    """What the captioner learns to say: any framing, positions and sizes always, objects in slot order."""
    return describe(scene, rng.randrange(len(TEMPLATES)), word=False)


def train_captioner(cfg: CaptionerTrainConfig, out: Path, log: Callable[[str], None] = print, data: Split | None = None) -> dict:
    """Train and ``save_pretrained`` model, tokenizer and image processor into ``out``; returns a report."""
    from transformers import ViTImageProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    data = data or render_split(TRAIN, cfg.n_images, seed=cfg.seed, px=cfg.image_size, wide_share=cfg.wide_share, augmented=cfg.augmented,
                                size_bias=cfg.size_bias, proportion_share=cfg.proportion_share,
                                variation=cfg.variation, max_half_extent=cfg.max_half_extent)
    t_render = time.perf_counter() - t0
    tokenizer = build_tokenizer()
    if cfg.init_from:
        from transformers import VisionEncoderDecoderModel

        model = VisionEncoderDecoderModel.from_pretrained(cfg.init_from)
        if model.config.encoder.patch_size != cfg.patch_size:
            model = widen_patches(model, cfg.patch_size)
        model.config.encoder.image_size = cfg.image_size  # Swin's windows carry no absolute positions: any side works
    else:
        model = build_model(len(tokenizer), cfg)
    processor = ViTImageProcessor(size={"height": cfg.image_size, "width": cfg.image_size}, resample=3, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    pixels = torch.from_numpy(data.pixels).permute(0, 3, 1, 2)  # uint8, normalised a batch at a time (20k at 192 px: 2 GB, not 9)
    rng = random.Random(f"captioner:{cfg.seed}")
    head = torch.nn.Linear(model.config.encoder.hidden_size, len(TAGS)) if cfg.tag_weight else None
    trained = torch.nn.ModuleList([model, head]) if head is not None else model
    opt = torch.optim.AdamW(trained.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    n, curve = len(data.scenes), []
    model.train()
    for step in range(cfg.steps):
        idx = torch.randperm(n, generator=gen)[: cfg.batch_size]
        texts = [target_caption(data.scenes[i], rng) for i in idx.tolist()]
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        ids = torch.cat([enc.input_ids, torch.zeros(len(idx), 1, dtype=torch.long)], dim=1)
        lengths = enc.attention_mask.sum(1)
        ids[torch.arange(len(idx)), lengths] = tokenizer.eos_token_id  # each caption ends with [EOS]
        labels = ids.masked_fill(torch.arange(ids.shape[1])[None, :] > lengths[:, None], -100)
        result = model(pixel_values=pixels[idx].float().div_(255).sub_(0.5).div_(0.5), labels=labels)
        loss = result.loss
        if head is not None:
            tag_logits = head(result.encoder_last_hidden_state.mean(1))
            loss = loss + cfg.tag_weight * torch.nn.functional.binary_cross_entropy_with_logits(tag_logits, caption_tags(texts))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            curve.append({"step": step, "loss": round(loss.item(), 4)})
            log(f"  captioner step {step:5d}/{cfg.steps}  loss {loss.item():.3f}  ({time.perf_counter() - t0:.0f}s)")
    model.eval()
    model.generation_config.max_new_tokens = 40
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "README.md").write_text(
        f"World captioner (demo): {'Swin' if cfg.encoder == 'swin' else 'ViT'} encoder + GPT-2 decoder trained on the procedural world's training split "
        "(caption_assets/world). It describes coloured shapes; it knows nothing else.\n"
    )
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return {"config": asdict(cfg), "render_seconds": round(t_render, 1), "train_seconds": round(time.perf_counter() - t0 - t_render, 1),
            "parameters": int(sum(p.numel() for p in model.parameters())), "vocab_size": len(tokenizer), "curve": curve}


def train_captioner_staged(out: Path, stages: tuple[CaptionerTrainConfig, ...] = CAPTIONER_STAGES, *, start: int = 0,
                           log: Callable[[str], None] = print) -> dict:
    """Run ``stages`` in order into ``out``, each going on from the last (``train_in_stages``); ``start`` > 0 goes on
    from the model already in ``out``. Returns one report per stage run."""
    return train_in_stages("captioner", lambda cfg, out: train_captioner(cfg, out, log=log), out, stages, start, log)
