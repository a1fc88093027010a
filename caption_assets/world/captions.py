"""The world's caption grammar: true captions with paraphrases, noisy variants, and a parser back to attributes.

``describe`` writes what a careful annotator would; ``partial`` and ``wrong_attribute`` write what the web
does. ``mentioned_objects`` reads any caption (ours, a model's, a fused one) back into (colour, shape)
mentions, so a caption's correctness is a comparison of multisets, not a string match.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import replace

from caption_assets.world.scene import COLOURS, SHAPES, Scene, SceneObject

POSITION_PHRASE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom", "centre": "in the centre"}
PLURAL = {s: s + "es" if s.endswith("s") else s + "s" for s in SHAPES}
NUMBER_WORDS = {1: "a", 2: "two", 3: "three"}
# Framings of the same content; {objs} is the object list, {bg} the background colour.
TEMPLATES = (
    "{objs} on {bga} {bg} background",
    "{bga} {bg} background with {objs}",
    "{objs} against {bga} {bg} background",
    "a picture of {objs} on {bg}",
    "{objs}",  # short alt-text: the objects alone
)

# What the web writes instead of a caption: file names, SEO keyword lists, a site's text on every image.
BOILERPLATE = ("IMG_{n}.jpg", "DSC0{n}", "image", "photo", "untitled", "thumbnail", "P101{n}.JPG", "{n}.png", "screenshot_{n}")
SEO = (
    "shapes clipart vector free download png hd wallpaper",
    "buy geometric wall art online best price free shipping",
    "abstract background design template stock illustration royalty free",
    "cheap kids toys shapes colours learning educational sale",
)
SITE_TEXTS = ("Click here to enlarge", "Shop now - free shipping on all orders")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def object_phrase(o: SceneObject, *, size: bool = True, position: bool = True) -> str:
    words = ([o.size] if size else []) + [o.colour, o.shape]
    text = f"{article(words[0])} {' '.join(words)}"
    return f"{text} {POSITION_PHRASE[o.position]}" if position else text


def join_list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def grouped_phrases(objects: list[SceneObject], *, size: bool) -> list[str]:
    """Identical objects counted together ("two small red circles"), in first-seen order."""
    keys = [(o.size if size else "", o.colour, o.shape) for o in objects]
    counts = Counter(keys)
    out = []
    for k in dict.fromkeys(keys):
        n = counts[k]
        words = [w for w in k[:2] if w] + [PLURAL[k[2]] if n > 1 else k[2]]
        out.append(f"{NUMBER_WORDS[n] if n > 1 else article(words[0])} {' '.join(words)}")
    return out


def describe(scene: Scene, template: int = 0, *, positions: bool = True, sizes: bool = True, word: bool = True) -> str:
    """A true caption of the scene. ``template`` picks the framing; without positions identical objects are counted."""
    objs = scene.ordered()
    parts = [object_phrase(o, size=sizes) for o in objs] if positions else grouped_phrases(objs, size=sizes)
    bga = article(scene.background)
    text = TEMPLATES[template % len(TEMPLATES)].format(objs=join_list(parts), bg=scene.background, bga=bga)
    if word and scene.word:
        text += f' with the word "{scene.word}"'
    return text


def canonical(scene: Scene, *, word: bool = True) -> str:
    """The one reference caption per scene (first template, positions and sizes)."""
    return describe(scene, 0, word=word)


def paraphrase(scene: Scene, rng: random.Random, *, word: bool = True) -> str:
    """A random true caption: any framing, with or without positions and sizes."""
    return describe(scene, rng.randrange(len(TEMPLATES)), positions=rng.random() < 0.6, sizes=rng.random() < 0.8, word=word)


def partial(scene: Scene, rng: random.Random) -> str:
    """What lazy alt-text says: one object's colour and shape ("red circle"), sometimes the shape alone."""
    o = rng.choice(scene.objects)
    return o.shape if rng.random() < 0.2 else f"{o.colour} {o.shape}"


def wrong_attribute(scene: Scene, rng: random.Random, *, kind: str | None = None) -> tuple[str, Scene, str]:
    """A fluent caption with exactly one attribute wrong (a hard negative): (caption, altered scene, what changed).

    ``kind`` is ``colour`` (default 70%) or ``shape``. The altered scene keeps every other attribute.
    """
    kind = kind or ("colour" if rng.random() < 0.7 else "shape")
    i = rng.randrange(len(scene.objects))
    o = scene.objects[i]
    if kind == "colour":
        used = {x.colour for x in scene.objects} | {scene.background}
        new = replace(o, colour=rng.choice([c for c in COLOURS if c not in used]))
    else:
        new = replace(o, shape=rng.choice([s for s in SHAPES if s != o.shape]))
    altered = replace(scene, objects=scene.objects[:i] + (new,) + scene.objects[i + 1 :])
    return describe(altered, rng.randrange(len(TEMPLATES)), positions=rng.random() < 0.6, word=False), altered, kind


_COUNT = r"(?:(a|an|one|two|three)\s+)?"
_SIZE = r"(?:(small|large)\s+)?"
_MENTION = re.compile(
    _COUNT + _SIZE + r"(" + "|".join(COLOURS) + r")\s+(?:(small|large)\s+)?(" + "|".join(sorted(SHAPES, key=len, reverse=True)) + r")(es|s)?\b",
    re.IGNORECASE,
)
_COUNTS = {"two": 2, "three": 3}


def mentioned_objects(text: str) -> Counter:
    """(colour, shape) mentions in a caption, counted ("two red circles" counts 2). Background colours are not objects."""
    found: Counter = Counter()
    for m in _MENTION.finditer(text or ""):
        count = _COUNTS.get((m.group(1) or "").lower(), 1)
        found[(m.group(3).lower(), m.group(5).lower())] += count
    return found


def truth_objects(objects: list[dict] | tuple[SceneObject, ...]) -> Counter:
    return Counter((o["colour"], o["shape"]) if isinstance(o, dict) else (o.colour, o.shape) for o in objects)


def names_every_object(text: str, objects) -> bool:
    """True when the caption names each object's colour and shape, and nothing else (multisets equal)."""
    return mentioned_objects(text) == truth_objects(objects)


def hallucinated(text: str, objects) -> int:
    """How many (colour, shape) mentions have no object behind them."""
    extra = mentioned_objects(text) - truth_objects(objects)
    return sum(extra.values())
