"""Degenerate text: what small or badly prompted generators emit and no caption may be.

A caption is degenerate when it has no alphabetic content, loops (one word three times in a row, or a
phrase of 2-4 words twice in a row), or is mostly the same few words (fewer than 35% distinct among
six or more). Used to reject recaption candidates and fused captions (reason ``degenerate``), and by
the export check.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_TOKEN = re.compile(r"[^\W_]+(?:['-][^\W_]+)*", re.UNICODE)


def tokens(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text or "")]


def degeneration(text: str | None) -> str | None:
    """Why ``text`` is degenerate (``no_letters``, ``word_loop``, ``phrase_loop``, ``repetitive``), or None."""
    if not text or not re.search(r"[^\W\d_]", text):
        return "no_letters"
    words = tokens(text)
    for i in range(len(words) - 2):
        if words[i] == words[i + 1] == words[i + 2]:
            return "word_loop"
    for n in range(2, 5):
        for i in range(len(words) - 2 * n + 1):
            if words[i : i + n] == words[i + n : i + 2 * n]:
                return "phrase_loop"
    if len(words) >= 6 and len(set(words)) / len(words) < 0.35:
        return "repetitive"
    return None


def is_degenerate(text: str | None) -> bool:
    return degeneration(text) is not None


def distinct_ngram_ratio(candidates: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams / all n-grams across a candidate set (1.0 = no n-gram repeated)."""
    grams = []
    for c in candidates:
        words = c.lower().split()
        grams += [tuple(words[i : i + n]) for i in range(max(0, len(words) - n + 1))]
    return len(set(grams)) / len(grams) if grams else 0.0
