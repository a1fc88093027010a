"""Train the demo fuser on the world's training split: a small Llama-family causal LM (transformers).

A fuser sees text only, so its training pairs need no pictures: each is the prompt the product sends (the
versioned template in ``caption_assets/prompts``, filled by ``fusion.render_prompt``) with inputs drawn the way the
crawl and the demo models make them, and the scene's true caption as the answer:

- the alt-text of a pair the filter kept: mostly a true paraphrase (with the printed word when the crawl writes
  it), else lazy ("red circle"), one attribute wrong, another scene's caption, boilerplate or a site's text;
- the captioner's caption: a true description in one of its framings, sometimes with one attribute wrong or an
  object missing (the demo captioner's measured error kinds);
- the vision experts' facts: zero-shot shape tags (sometimes wrong) and the OCR'd word (sometimes missed).

The answer is ``canonical(scene)``, with the word only when an input carried it (a fuser cannot know a word no
input saw). Truth is a training target on the training split only; nothing reads it at run time. Saved with
``save_pretrained`` (Llama config, byte-level BPE tokenizer, chat template), so ``AutoModelForCausalLM``,
``transformers serve`` and vLLM load it as they would a hub checkpoint.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from caption_assets.fusion import FusionInput, expert_facts, render_prompt
from caption_assets.world.captions import BOILERPLATE, SEO, SITE_TEXTS, TEMPLATES, canonical, describe, hallucinated, names_every_object, paraphrase, partial, wrong_attribute
from caption_assets.world.data import TEST, TRAIN, warmup_cosine
from caption_assets.world.scene import COLOURS, SHAPES, WORDS, Scene, sample_scene, scene_rng

USER, ASSISTANT, END, PAD = "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}" + USER + "{{ m['content'] }}{% else %}" + ASSISTANT + "{{ m['content'] }}" + END
    + "{% endif %}{% endfor %}{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}"
)
# What reaches the fuser: pairs the filter kept, so mostly true alt-texts (shares from the demo's stage truth).
ALT_KINDS = {"correct": 0.62, "partial": 0.18, "wrong_attribute": 0.08, "misaligned": 0.05, "boilerplate": 0.04, "site_text": 0.03}


@dataclass(frozen=True)
class FuserTrainConfig:
    """The run that learned to copy: loss 0.06 by step 1,000, 0.02 at 15,000 (6 min on a lent H200). With lr 2e-3,
    batch 32 and 2,500 steps (5 min on 16 CPU threads) the loss stalled at 0.33: it wrote the grammar, not the
    inputs' colours and shapes (attribute accuracy 0.05)."""

    template: str = "fusecap_v1"  # the prompt the demo profile sends (it carries the experts' facts)
    n_scenes: int = 60000
    steps: int = 15000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 300
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    vocab_size: int = 1024
    seed: int = 0
    word_rate: float = 0.25  # share of scenes (200 px and up) with a printed word, as the crawl draws them
    word_weight: float = 1.0  # loss weight of the printed word's tokens in the answer
    copy_share: float = 0.0  # share of each batch that is the short copy task (see ``copy_examples``)


def alt_text(scene: Scene, rng: random.Random) -> str:
    kind = rng.choices(list(ALT_KINDS), list(ALT_KINDS.values()))[0]
    if kind == "correct":
        return paraphrase(scene, rng)
    if kind == "partial":
        return partial(scene, rng)
    if kind == "wrong_attribute":
        return wrong_attribute(scene, rng)[0]
    if kind == "misaligned":
        return paraphrase(sample_scene(random.Random(rng.random())), rng)
    if kind == "boilerplate":
        return rng.choice(BOILERPLATE + SEO).format(n=rng.randint(1000, 9999))
    return rng.choice(SITE_TEXTS)


def synthetic_caption(scene: Scene, rng: random.Random) -> str:
    """What the demo captioner says: every object with size and position, in one of its framings; sometimes one
    attribute wrong or an object missing. It never reads the printed word."""
    seen = scene
    u = rng.random()
    if u < 0.06:
        seen = wrong_attribute(scene, rng)[1]
    elif u < 0.09 and len(scene.objects) > 1:
        drop = rng.randrange(len(scene.objects))
        seen = replace(scene, objects=scene.objects[:drop] + scene.objects[drop + 1:])
    return describe(seen, rng.randrange(len(TEMPLATES)), word=False)


def experts(scene: Scene, rng: random.Random) -> tuple[list[str], str | None]:
    """What the demo's experts report: one zero-shot shape tag (two now and then), each one of the scene's shapes
    half the time, and the printed word when Tesseract reads it (about 60% of the words, on the 5k crawl)."""
    n = 1 if rng.random() < 0.85 else 2
    tags = list(dict.fromkeys(rng.choice(scene.objects).shape if rng.random() < 0.5 else rng.choice(SHAPES) for _ in range(n)))
    ocr = scene.word if scene.word and rng.random() < 0.6 else None
    return tags, ocr


@dataclass(frozen=True)
class Example:
    scene: Scene
    inputs: FusionInput
    answer: str
    carried: bool  # an input carried the printed word


def example(scene: Scene, rng: random.Random) -> Example:
    alt, syn = alt_text(scene, rng), synthetic_caption(scene, rng)
    tags, ocr = experts(scene, rng)
    carried = bool(scene.word) and (ocr == scene.word or f'"{scene.word}"' in alt)
    return Example(scene, FusionInput(alt, syn, expert_facts(tags, ocr)), canonical(scene, word=carried), carried)


def examples(split: str, n: int, seed: int = 0, word_rate: float = 0.25) -> list[Example]:
    return [example(sample_scene(scene_rng(split, seed, i), word_rate=word_rate), random.Random(f"fuser:{split}:{seed}:{i}")) for i in range(n)]


def build_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE over the training prompts and answers (no unknown words: a real alt-text still tokenizes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, USER, ASSISTANT, END], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=END, bos_token=USER)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(vocab_size: int, cfg: FuserTrainConfig):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=cfg.hidden, intermediate_size=cfg.hidden * 3, num_hidden_layers=cfg.layers,
                         num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads, max_position_embeddings=512, tie_word_embeddings=True,
                         pad_token_id=0, bos_token_id=1, eos_token_id=3)
    return LlamaForCausalLM(config)


def encode(tok, prompt: str, answer: str) -> tuple[list[int], int]:
    """Token ids of the chat-formatted prompt and the answer with its end token; the prompt's length."""
    head = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    ids_head = tok(head, add_special_tokens=False)["input_ids"]
    ids_answer = tok(answer + END, add_special_tokens=False)["input_ids"]
    return ids_head + ids_answer, len(ids_head)


def word_token_ids(tok) -> set[int]:
    """The ids the printed words tokenize to (inside quotes, as every input and answer writes them)."""
    ids: set[int] = set()
    for w in WORDS:
        ids.update(tok(f' "{w}"', add_special_tokens=False)["input_ids"][1:-1])
    return ids


def copy_examples(n: int, seed: int) -> list[tuple[str, str]]:
    """A curriculum for the one skill the fuser does not pick up from the long prompt on a CPU budget: copying the
    printed word. Short prompts (a scene's description, the word quoted in a web phrasing or as the OCR fact, a
    distractor, in random order) whose answer is the scene's canonical caption with the word. The word sits at a
    different distance every time, so only attention to the word itself answers it (a fixed-offset prompt was
    learned perfectly and taught the long prompt nothing)."""
    rng = random.Random(f"fuser-copy:{seed}")
    out = []
    for _ in range(n):
        scene = sample_scene(rng, word_rate=1.0, side=rng.randrange(200, 513, 8))
        w = scene.word
        mention = rng.choice([f'visible text: "{w}"', f'the word "{w}"', f'a sign that says "{w}"', f'"{w}"', f'{paraphrase(scene, rng)}'])
        parts = [describe(scene, rng.randrange(len(TEMPLATES)), word=False), mention]
        parts += [rng.choice(BOILERPLATE + SEO).format(n=rng.randint(1000, 9999)) for _ in range(rng.randint(0, 2))]
        rng.shuffle(parts)
        out.append((". ".join(parts), canonical(scene, word=True)))
    return out


def train_fuser(cfg: FuserTrainConfig, out: Path, log: Callable[[str], None] = print, device: str = "cpu", init: Path | None = None) -> dict:
    """Train from scratch, or go on from ``init`` (its tokenizer and weights) with this config's data and loss."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    data = examples(TRAIN, cfg.n_scenes, cfg.seed, cfg.word_rate)
    prompts = [render_prompt(cfg.template, e.inputs) for e in data]
    if init is None:
        tok = build_tokenizer(prompts[:5000] + [e.answer for e in data[:20000]], cfg.vocab_size)
        model = build_model(len(tok), cfg).to(device)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok, model = AutoTokenizer.from_pretrained(init), AutoModelForCausalLM.from_pretrained(init).to(device)
    encoded = [encode(tok, p, e.answer) for p, e in zip(prompts, data)]
    copies = [encode(tok, p, a) for p, a in copy_examples(5000, cfg.seed)]
    weight_of = torch.ones(len(tok))
    weight_of[sorted(word_token_ids(tok))] = cfg.word_weight
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    rng = random.Random(cfg.seed)
    curve = []
    model.train()
    for step in range(cfg.steps):
        batch = [copies[rng.randrange(len(copies))] if rng.random() < cfg.copy_share else encoded[rng.randrange(len(encoded))] for _ in range(cfg.batch_size)]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for r, (seq, head) in enumerate(batch):
            ids[r, : len(seq)] = torch.tensor(seq)
            labels[r, head: len(seq)] = torch.tensor(seq[head:])
            mask[r, : len(seq)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1]
        target = labels[:, 1:].to(device)
        per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none", ignore_index=-100)
        w = weight_of.to(device)[target.clamp(min=0)].reshape(-1) * (target.reshape(-1) != -100)
        loss = (per_token * w).sum() / w.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            value = float(loss.detach())
            curve.append({"step": step, "loss": round(value, 4)})
            log(f"  step {step:5d}  loss {value:.4f}  ({time.perf_counter() - t0:.0f}s)")
    model = model.to("cpu").eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {"config": asdict(cfg), "train_seconds": round(time.perf_counter() - t0, 1), "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tok), "curve": curve}


def evaluate_fuser(folder: Path, n: int = 300, template: str = "fusecap_v1", batch_size: int = 32) -> dict:
    """On the held-out test split, through the product's loader and batched generation (``resources.fuser``): how
    often the fused caption names every object right, names one that is not there, and keeps the printed word
    when an input carried it."""
    from resources.fuser import CaptionFuser

    data = examples(TEST, n)
    fuser = CaptionFuser(backend="transformers", model=str(folder), template=template, batch_size=batch_size, device="cpu", precision="fp32")
    fuser.setup_for_execution()
    t0 = time.perf_counter()
    out = fuser.fuse([e.inputs for e in data])
    seconds = time.perf_counter() - t0
    texts = [t or "" for t, _ in out]
    objects = [[asdict(o) for o in e.scene.ordered()] for e in data]
    kept = [f'"{e.scene.word}"' in t for e, t in zip(data, texts) if e.carried]
    return {
        "n": n,
        "fused_attribute_accuracy": round(sum(names_every_object(t, o) for t, o in zip(texts, objects)) / n, 3),
        "fused_hallucination_rate": round(sum(hallucinated(t, o) > 0 for t, o in zip(texts, objects)) / n, 3),
        "synthetic_attribute_accuracy": round(sum(names_every_object(e.inputs.synthetic_caption, o) for e, o in zip(data, objects)) / n, 3),
        "word_kept_when_carried": round(sum(kept) / max(1, len(kept)), 3),
        "words_carried": len(kept),
        "exact_canonical": round(sum(t == e.answer for t, e in zip(texts, data)) / n, 3),
        "pairs_per_second": round(n / seconds, 1),
    }


def word_choice(folder: Path, n: int = 150, pairs: list[tuple[str, str]] | None = None) -> dict:
    """Whether a fuser looks the printed word up: on ``n`` held-out prompts that carry a word (or the given
    ``(prompt, answer)`` pairs, e.g. held-out ``copy_examples``), teacher-forced, the probability it gives the right
    word where the answer writes it, and how often that word is its first choice. Chance is one in ``len(WORDS)``; a
    model that learned where a word goes but not which sits there."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()
    words = word_token_ids(tok)
    if pairs is None:
        pairs = [(render_prompt("fusecap_v1", e.inputs), e.answer) for e in examples(TEST, 12 * n) if e.carried][:n]
    p = hits = count = 0.0
    with torch.inference_mode():
        for prompt, answer in pairs:
            ids, head = encode(tok, prompt, answer)
            probs = model(torch.tensor([ids])).logits[0].softmax(-1)
            for i in (i for i in range(head, len(ids)) if ids[i] in words):
                p, hits, count = p + float(probs[i - 1, ids[i]]), hits + int(probs[i - 1].argmax() == ids[i]), count + 1
    return {"word_positions": int(count), "p_right_word": round(p / max(1, count), 3), "argmax_right": round(hits / max(1, count), 3), "chance": round(1 / len(WORDS), 3)}
