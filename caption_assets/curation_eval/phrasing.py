"""The test set's held-out phrasing, and the template skeleton every caption source is compared by.

The world's caption grammar wrote the crawl's true alt-texts, the demo captioner's training targets and
the canonical reference captions. A training set whose captions copy that grammar would get credit for
its style if the queries were written in it too. So the headline queries (and zero-shot prompts) are
written in a family no caption source uses: colour and shape stay the vocabulary, the framing, the order
of attributes and the position words are new. ``skeleton`` reduces any caption to its template (attribute
words replaced by slots), so "no shared template" is a set comparison a test can make.
"""

from __future__ import annotations

import re

from caption_assets.world.scene import COLOURS, SHAPES, Scene

WHERE = {"left": "left side", "right": "right side", "top": "upper part", "bottom": "lower part", "centre": "middle"}
HELD_OUT_ZEROSHOT_PROMPTS = [f"object: {c} {s}" for s in SHAPES for c in COLOURS]  # shape-major grid, as ZEROSHOT_PROMPTS


def held_out_caption(scene: Scene) -> str:
    """One reference per scene, e.g. ``green backdrop; objects: red circle (small, left side), blue star (large,
    upper part); printed text: HOTEL``."""
    items = ", ".join(f"{o.colour} {o.shape} ({o.size}, {WHERE[o.position]})" for o in scene.ordered())
    text = f"{scene.background} backdrop; objects: {items}"
    return f"{text}; printed text: {scene.word}" if scene.word else text


_SLOTS = [
    (re.compile(r'"[^"]*"|(?<=printed text: )\S+$'), "<word>"),
    (re.compile(r"\b(" + "|".join(sorted(SHAPES, key=len, reverse=True)) + r")(es|s)?\b"), "<shape>"),
    (re.compile(r"\b(" + "|".join(COLOURS) + r")\b"), "<colour>"),
    (re.compile(r"\b(small|large)\b"), "<size>"),
    (re.compile(r"\b(an?|one|two|three)\b"), "<count>"),
]


def skeleton(caption: str) -> str:
    """The caption's template: printed words, shapes, colours, sizes and counts replaced by slots, spaces collapsed.
    Position phrases stay: they are part of a phrasing family's framing."""
    text = caption.lower().strip()
    for pattern, slot in _SLOTS:
        text = pattern.sub(slot, text)
    return re.sub(r"\s+", " ", text)
