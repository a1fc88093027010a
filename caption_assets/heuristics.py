"""ALIGN / LAION / DataComp-style heuristic flags, as vectorised polars expressions.

Flags are recorded, never applied here: ``scored_pairs`` decides what to keep. Defaults follow
DataComp's basic filter (shorter side >= 200 px, aspect ratio <= 3, at least 2 words) and ALIGN
(alt-texts shared by more than 10 images are boilerplate).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

# Priority order: the first flag that applies is the row's primary reason in the funnel.
FLAG_ORDER = (
    "duplicate_image",
    "copy_image",
    "small_image",
    "extreme_aspect",
    "boilerplate_caption",
    "repeated_caption",
    "caption_too_short",
    "caption_too_long",
)

# What scored_pairs drops by default: every flag. A ``copy_image`` is a copy verified by alignment
# (caption_assets.copy_detection), not a pHash neighbour, so it is dropped like identical bytes.
DEFAULT_DROP_FLAGS = FLAG_ORDER

BOILERPLATE_TEXTS = (
    "image", "images", "photo", "photos", "picture", "pic", "img", "untitled", "thumbnail", "thumb",
    "logo", "banner", "icon", "click to enlarge", "click here", "click here to enlarge", "no image",
    "image not found", "placeholder", "default", "null", "none", "n/a", "loading", "photo credit",
    "stock photo", "featured image", "view larger image", "product image",
)
# File names and camera counters used as alt-text: "IMG_1234.jpg", "DSC01234", "photo-12.png".
BOILERPLATE_PATTERN = (
    r"(?i)^[\w\-. ()]*\.(jpe?g|png|gif|webp|bmp|tiff?|heic)$"
    r"|(?i)^(img|dsc|dscn|dscf|pict|pic|image|photo|screenshot|untitled|scan)[\s_\-]*\d+$"
)


@dataclass(frozen=True)
class HeuristicConfig:
    min_side: int = 200
    max_aspect: float = 3.0
    min_words: int = 2
    max_words: int = 64
    max_caption_repeats: int = 10


def flag_exprs(cfg: HeuristicConfig) -> dict[str, pl.Expr]:
    """One boolean expression per flag, over the ``raw_pairs`` columns."""
    short_side = pl.min_horizontal("width", "height")
    long_side = pl.max_horizontal("width", "height")
    bare = pl.col("caption").str.to_lowercase().str.strip_chars(" .,:;!?-_|*\"'")
    words = pl.col("caption_words")
    return {
        # an identical image earlier in this shard, or earlier in the global order (the duplicate index's verdict)
        "duplicate_image": pl.col("sha256").is_duplicated() & (pl.int_range(pl.len()).over("sha256") > 0)
        | (pl.col("duplicate_kind") == "exact").fill_null(False),
        # a verified copy (re-encode, rescale, crop, shift) of an image earlier in the global order
        "copy_image": (pl.col("duplicate_kind") == "copy").fill_null(False),
        "small_image": short_side < cfg.min_side,
        "extreme_aspect": long_side > short_side * cfg.max_aspect,
        "boilerplate_caption": bare.is_in(BOILERPLATE_TEXTS) | pl.col("caption").str.contains(BOILERPLATE_PATTERN),
        "repeated_caption": pl.len().over(bare) > cfg.max_caption_repeats,
        "caption_too_short": words < cfg.min_words,
        "caption_too_long": words > cfg.max_words,
    }


def add_flags(df: pl.DataFrame, cfg: HeuristicConfig) -> pl.DataFrame:
    """Add ``flags`` (list of reason codes, in priority order) and ``primary_flag``.

    ``duplicate_kind`` (exact | copy | null) is the duplicate index's verdict for each row.
    """
    exprs = flag_exprs(cfg)
    flags = pl.concat_list([pl.when(exprs[name]).then(pl.lit(name)).otherwise(pl.lit(None, dtype=pl.String)) for name in FLAG_ORDER])
    return df.with_columns(flags=flags.list.drop_nulls()).with_columns(primary_flag=pl.col("flags").list.first())
