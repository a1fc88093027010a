"""Caption fusion (CapsFusion / VeCLIP / FuseCap): prompt templates, a rule-based fuser, guardrails.

Pure functions. The templates are versioned files in ``caption_assets/prompts``; changing a prompt
means adding ``<name>_v<N+1>.txt`` so fused outputs stay traceable to the prompt that made them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from string import Template

import numpy as np

from caption_assets.degeneration import is_degenerate, tokens

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"

REFUSAL_PATTERNS = re.compile(
    r"(?i)\b(i'?m sorry|i am sorry|i cannot|i can't|i can not|as an ai|language model|i'?m unable|i am unable|cannot help)\b"
)
# Fragments of our own templates that must never appear in an accepted caption.
ECHO_PATTERNS = re.compile(r"(?i)(sentence 1|sentence 2|alt-text:|model caption:|vision experts:|web alt-text|new caption|^caption:)")
_NUMBER = re.compile(r"\b\d+(?:[.,]\d+)*\b")
_WORD = re.compile(r"[A-Za-z][\w'-]*")
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+)([A-Z][\w'-]*)")


@dataclass(frozen=True)
class FusionInput:
    alt_text: str
    synthetic_caption: str
    expert_facts: str = ""


@lru_cache(maxsize=16)
def load_template(name: str) -> Template:
    path = PROMPTS_DIR / f"{name}.txt"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PROMPTS_DIR.glob("*.txt")))
        raise ValueError(f"fusion template {name!r} does not exist (known: {known})")
    return Template(path.read_text(encoding="utf-8").strip())


def render_prompt(name: str, item: FusionInput) -> str:
    return load_template(name).substitute(
        alt_text=item.alt_text.strip(), synthetic_caption=item.synthetic_caption.strip(), expert_facts=item.expert_facts.strip() or "none"
    )


def expert_facts(tags: Sequence[str], ocr_text: str | None) -> str:
    parts = []
    if tags:
        parts.append("objects: " + ", ".join(tags))
    if ocr_text:
        parts.append(f'visible text: "{ocr_text}"')
    return "; ".join(parts)


# Words that carry no knowledge of their own in an alt-text (articles, prepositions, "photo of").
FILLER = frozenset(
    "a an the of on in at to with and or for by from near over under its this that is are be".split()
    + "picture pictures photo photos image images showing shows view background against".split()
)
_QUOTED = re.compile(r'"([^"]{1,60})"')
_TEXT_WORDS = {"word", "words", "text", "sign", "reading", "says", "written"}


def novel_words(alt_text: str, synthetic: str) -> set[str]:
    """Content words of the alt-text that the synthetic caption does not already say."""
    return {w for w in tokens(alt_text) if w not in FILLER} - set(tokens(synthetic))


def rule_fuse(item: FusionInput, alt_informative: bool, tags: Sequence[str] = (), ocr_text: str | None = None) -> str:
    """Deterministic fusion without a model: the synthetic caption, the alt-text when it is informative and
    adds words the synthetic caption lacks (only its quoted text when that is all it adds, or when it restates
    the caption), the OCR text when the caption does not already quote it.
    Used by the demo profile and as the fallback."""
    base = item.synthetic_caption.strip().rstrip(".")
    alt = item.alt_text.strip().rstrip(".")
    parts = [base] if base else []
    novel = novel_words(alt, base) if base else set(tokens(alt))
    quoted = _QUOTED.findall(alt)
    if alt_informative and alt and novel:
        content = {w for w in tokens(alt) if w not in FILLER}
        # an alt-text whose content words are mostly the synthetic caption's describes the same things: appending it
        # would list them twice, and where the two disagree (a heart, a cross) say both. Rules cannot tell which is
        # right; the guardrail's scores can (a better-scored alt-text wins the fallback).
        restates = bool(base) and len(content - novel) >= 0.5 * len(content)
        if base and quoted and (restates or novel <= set(tokens(" ".join(quoted))) | _TEXT_WORDS):
            parts += [f'with the text "{q}"' for q in quoted]  # the alt-text only adds the visible text
        elif not restates:
            parts.append(alt)
    ocr = (ocr_text or "").strip()
    if ocr and f'"{ocr.lower()}"' not in ", ".join(parts).lower():
        parts.append(f'with the text "{ocr}"')
    return ", ".join(parts)


def entities(text: str) -> set[str]:
    """Numbers and capitalised words that do not start a sentence: a light named-entity proxy."""
    found = {m.group(0) for m in _NUMBER.finditer(text)}
    starts = {m.start(1) for m in _SENTENCE_START.finditer(text)}
    found |= {m.group(0) for m in _WORD.finditer(text) if m.group(0)[0].isupper() and m.start() not in starts}
    return found


def unsupported_entities(fused: str, sources: Sequence[str]) -> list[str]:
    """Entities of ``fused`` found in none of the inputs (case-insensitive word match)."""
    vocab = set()
    for s in sources:
        vocab |= {w.lower() for w in _WORD.findall(s)} | set(_NUMBER.findall(s))
    return sorted(e for e in entities(fused) if e.lower() not in vocab and e not in vocab)


@dataclass(frozen=True)
class Guardrails:
    min_words: int = 3
    max_words: int = 77
    score_margin: float = 0.02


def phrasing_noise(image_emb: np.ndarray, phrasing_emb: np.ndarray, q: float = 0.9) -> float:
    """How far a scorer moves between captions that say the same true thing: the ``q`` quantile of
    |score(a) - score(b)| over images [N, D] and two true phrasings of each [N, 2, D], all L2-normalised.
    ``Guardrails.score_margin`` below this rejects fused captions for their wording, not their content."""
    scores = np.einsum("nd,nkd->nk", image_emb, phrasing_emb)
    return float(np.quantile(np.abs(scores[:, 0] - scores[:, 1]), q))


def reject_reason(fused: str | None, sources: Sequence[str], fused_score: float | None, best_input_score: float, g: Guardrails) -> str | None:
    """None when the fused caption may replace its inputs, else the first failing guardrail."""
    if fused is None or not fused.strip():
        return "empty"
    if is_degenerate(fused):
        return "degenerate"
    words = len(fused.split())
    if words < g.min_words:
        return "too_short"
    if words > g.max_words:
        return "too_long"
    if REFUSAL_PATTERNS.search(fused):
        return "refusal"
    if ECHO_PATTERNS.search(fused):
        return "prompt_echo"
    if unsupported_entities(fused, sources):
        return "hallucinated_entity"
    if fused_score is None or fused_score < best_input_score - g.score_margin:
        return "low_score"
    return None
