"""Minimum-Bayes-risk choice among caption candidates: the one the others agree with most.

Best-of-N by CLIP score trusts the scorer where it is weakest: a small CLIP counts objects poorly, so a candidate
that names one object twice ("… a small green ring at the bottom and a small green ring on the right") can outscore
the right ones. MBR decoding (Kumar & Byrne 2004; used for captioning and MT reranking) picks the candidate with the
highest expected utility against the others instead; the utility here is word-multiset F1, and CLIP score breaks ties.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

SELECTIONS = ("clip", "consensus")
_WORD = re.compile(r"[\w']+")


def word_f1(a: Counter, b: Counter) -> float:
    total = sum(a.values()) + sum(b.values())
    return 2 * sum((a & b).values()) / total if total else 0.0


def agreement(candidates: Sequence[str]) -> np.ndarray:
    """Each candidate's mean word-multiset F1 with the other candidates (1.0 for a lone candidate)."""
    bags = [Counter(_WORD.findall(c.lower())) for c in candidates]
    n = len(bags)
    if n <= 1:
        return np.ones(n)
    f1 = np.array([[word_f1(bags[i], bags[j]) if i != j else 0.0 for j in range(n)] for i in range(n)])
    return f1.sum(axis=1) / (n - 1)


def choose(scores: np.ndarray, candidates: Sequence[str], selection: str = "clip") -> int:
    """Index of the chosen candidate: best CLIP score, or (``consensus``) most agreed-with among the usable ones
    (finite score), CLIP score breaking ties. Unusable candidates neither win nor count as votes."""
    if selection == "clip" or len(candidates) <= 1:
        return int(np.argmax(scores))
    if selection != "consensus":
        raise ValueError(f"unknown candidate selection {selection!r} (choose one of {', '.join(SELECTIONS)})")
    usable = np.flatnonzero(np.isfinite(scores))
    if len(usable) == 0:
        return int(np.argmax(scores))
    agree = agreement([candidates[i] for i in usable])
    return int(usable[np.lexsort((scores[usable], agree))[-1]])
