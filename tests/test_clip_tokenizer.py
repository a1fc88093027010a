"""The Rust tokenizer gives open_clip's token ids exactly, on real web alt-texts and on hostile text."""

from __future__ import annotations

from pathlib import Path

import open_clip
import polars as pl
import pytest

from caption_assets.clip_tokenizer import FastClipTokenizer, fast_tokenizer
from caption_assets.text import normalise_caption

# the TEXT column of ../shared/data/laion_alt_texts_1000.parquet (1,000 LAION alt-texts from img2dataset's test fixtures)
ALT_TEXTS = Path(__file__).parent / "fixtures" / "laion_alt_texts.parquet"
HOSTILE = [
    "", "   ", "A  Red\tSquare\n\non WHITE", "Caf\u00c3\u00a9 &amp; croissant &lt;b&gt;", "naïve café — “quoted” ‘text’",
    "日本語のキャプション 東京タワー", "emoji 🐶🐱 and ZWJ 👩‍💻", "it's they're we've I'm you'll he'd",
    "1234567890 3.14 -42 #tag @user http://example.com/a?b=c&d=e", "x" * 500, " ".join(["word"] * 200),
    "<start_of_text> inside <end_of_text> text", "\x00control\x1bchars\x7f", "ﬁ ligature ＦＵＬＬＷＩＤＴＨ",
]


def texts() -> list[str]:
    real = pl.read_parquet(ALT_TEXTS)["TEXT"].drop_nulls().to_list()
    return real + [normalise_caption(t) for t in real] + HOSTILE


@pytest.mark.parametrize("model,context", [("ViT-B-32", 77), ("ViT-B-32", 40)])
def test_same_ids_as_open_clip(model: str, context: int):
    slow = open_clip.get_tokenizer(model, context_length=context)
    fast = fast_tokenizer(slow)
    assert isinstance(fast, FastClipTokenizer)
    batch = texts()
    assert len(batch) > 2000
    a, b = slow(batch), fast(batch)
    assert a.shape == b.shape == (len(batch), context)
    mismatched = [t for t, x, y in zip(batch, a, b) if not (x == y).all()]
    assert mismatched == []
    assert (b[:, 0] == slow.sot_token_id).all() and (b == slow.eot_token_id).any(dim=1).all()


def test_other_tokenizers_are_left_alone():
    class Custom:
        pass

    custom = Custom()
    assert fast_tokenizer(custom) is custom
