"""The world fuser on inputs no world caption source writes (issue 22: instruments that generalise).

    python bench/fuser_probe.py [--model data/demo_models/world-fuser] [--n 120]

Test-split scenes, each with a printed word, fused through the product's loader and batched generation
(``resources.fuser``, ``fusecap_v1``). The synthetic caption is the simulated captioner's; what changes is how the
word and the alt-text reach the fuser:

- ``world``: the world's own alt-text phrasing carries the word, OCR silent (the training distribution);
- ``ocr_unseen_word``: OCR reads a word the world never prints (EXIT, BAKERY, ...), the alt-text names none;
- ``alt_other_phrasing``: OCR silent; the alt-text is written here in phrasings no caption source uses
  (curly or single quotes, the bare word, "sign reading ...", a dash-separated stock-photo title);
- ``real_alt_text``: no word anywhere; the alt-text is a real LAION alt-text (``tests/fixtures``).

For each: how often the fused caption keeps the word (quoted, as the captions write it), names every object right,
names one that is not there, and writes a word no input carried.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UNSEEN_WORDS = ("EXIT", "BAKERY", "BANK", "CINEMA", "GARAGE", "MARKET", "POLICE", "SUSHI", "HOSTEL", "FRESH")
PHRASINGS = (
    "{desc}, sign reading ‘{word}’", "{word} - {desc} - stock photo", "{desc} and the text {word}",
    "“{word}” {desc}", "{desc} with '{word}' written on it", "{word} sign, {desc}",
)


def cases(kind: str, n: int, alt_texts: list[str]) -> list[tuple[object, object, str | None]]:
    """(scene, FusionInput, the word the fused caption should keep or None)."""
    from caption_assets.fusion import FusionInput, expert_facts
    from caption_assets.world.captions import describe, paraphrase
    from caption_assets.world.data import TEST
    from caption_assets.world.scene import sample_scene, scene_rng
    from caption_assets.world.train_fuser import synthetic_caption

    out = []
    for i in range(n):
        scene = sample_scene(scene_rng(TEST, 11, i), word_rate=1.0, side=320)
        rng = random.Random(f"fuser-probe:{kind}:{i}")
        syn = synthetic_caption(scene, rng)
        if kind == "world":
            out.append((scene, FusionInput(paraphrase(scene, rng), syn, expert_facts([], None)), scene.word))
        elif kind == "ocr_unseen_word":
            word = UNSEEN_WORDS[i % len(UNSEEN_WORDS)]
            scene = replace(scene, word=word)
            out.append((scene, FusionInput(paraphrase(scene, rng, word=False), syn, expert_facts([], word)), word))
        elif kind == "alt_other_phrasing":
            alt = PHRASINGS[i % len(PHRASINGS)].format(desc=describe(scene, rng.randrange(3), positions=False, word=False), word=scene.word)
            out.append((scene, FusionInput(alt, syn, expert_facts([], None)), scene.word))
        else:
            scene = replace(scene, word=None)
            out.append((scene, FusionInput(alt_texts[i % len(alt_texts)], syn, expert_facts([], None)), None))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "data" / "demo_models" / "world-fuser"))
    ap.add_argument("--n", type=int, default=120)
    args = ap.parse_args()
    import polars as pl

    from caption_assets.world.captions import hallucinated, names_every_object
    from resources.fuser import CaptionFuser

    alt_texts = pl.read_parquet(ROOT / "tests" / "fixtures" / "laion_alt_texts.parquet").to_series(0).drop_nulls().to_list()
    fuser = CaptionFuser(backend="transformers", model=args.model, template="fusecap_v1", batch_size=32, device="cpu", precision="fp32")
    fuser.setup_for_execution()
    figures, examples = {}, {}
    for kind in ("world", "ocr_unseen_word", "alt_other_phrasing", "real_alt_text"):
        data = cases(kind, args.n, alt_texts)
        texts = [t or "" for t, _ in fuser.fuse([inp for _, inp, _ in data])]
        objects = [[asdict(o) for o in scene.ordered()] for scene, _, _ in data]
        with_word = [(t, w) for t, (_, _, w) in zip(texts, data) if w]
        figures[kind] = {
            "n": len(data),
            "word_kept": round(sum(f'"{w}"' in t for t, w in with_word) / len(with_word), 3) if with_word else None,
            "word_invented": round(sum('"' in t for t, (_, _, w) in zip(texts, data) if not w) / max(1, sum(not w for *_, w in data)), 3),
            "names_every_object": round(sum(names_every_object(t, o) for t, o in zip(texts, objects)) / len(data), 3),
            "hallucination": round(sum(hallucinated(t, o) > 0 for t, o in zip(texts, objects)) / len(data), 3),
        }
        examples[kind] = [{"alt_text": inp.alt_text, "facts": inp.expert_facts, "fused": t} for t, (_, inp, _) in list(zip(texts, data))[:2]]
    print(json.dumps({"figures": figures, "examples": examples}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
