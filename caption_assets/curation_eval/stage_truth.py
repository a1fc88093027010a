"""Each stage judged against the world's truth table, joined on uid.

Only the evaluation reads the truth (``truth.parquet`` beside the crawl folder); no pipeline stage
does. Every figure is a fraction with its denominator ``n`` beside it, so a reader can tell a 1.0 over
three pairs from a 1.0 over three thousand.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from caption_assets.world.captions import hallucinated, names_every_object

# Alt-texts that say something false about the image (or nothing about it): what filtering should drop.
FALSE_CAPTION = ("misaligned", "misaligned_web", "wrong_attribute", "boilerplate", "site_text")
MISALIGNED = ("misaligned", "misaligned_web")
BOILERPLATE = ("boilerplate", "site_text")
LOW_ALIGNMENT_REASONS = ("low_clip_score", "low_reward_score")  # scored_pairs' reasons that claim a mismatch
DUPLICATE_REASONS = ("exact_duplicate", "semantic_duplicate")
IN_WORLD = ~pl.col("noise").is_in(["ood_photo", "broken"])  # photos and hostile records have no attribute truth
STAGE_TRUTH_SCHEMA = {"stage": pl.String, "metric": pl.String, "value": pl.Float64, "n": pl.Int64}


@dataclass
class LakeFrames:
    """What the pipeline wrote, one frame per stage (the columns each metric needs)."""

    raw: pl.DataFrame  # uid, caption (and duplicate_kind, candidate_of: the duplicate index's verdict and first candidate)
    quarantine: pl.DataFrame  # shard, key, reason (ingest quarantine)
    scored: pl.DataFrame  # uid, keep, drop_reason, alignment_level
    recaptioned: pl.DataFrame  # uid, synthetic_caption
    fused: pl.DataFrame  # uid, fused_caption, fusion_status, final_caption
    selection: pl.DataFrame  # uid, selected, drop_reason
    manifest: pl.DataFrame  # uid, final_caption
    semdedup: pl.DataFrame | None = None  # uid, flagged: SemDeDup alone over every scored image (the peer's own figure)


def _ratio(rows: list, stage: str, metric: str, hits: int, n: int) -> None:
    rows.append((stage, metric, hits / n if n else None, n))


def quarantine_metrics(truth: pl.DataFrame, quarantine: pl.DataFrame, raw: pl.DataFrame) -> list[tuple]:
    """Hostile members quarantined, with the reason the crawl planted; nothing good quarantined.

    A planted failure without a key (a cut or unreadable shard, a sidecar that does not read) is found
    when its shard has a keyless quarantine row, and found for the right reason when one of them names it."""
    rows: list = []
    expected = truth.filter(pl.col("expected_quarantine").is_not_null()).select("shard", "key", "expected_quarantine")
    q = quarantine.filter(pl.col("key").is_not_null()).group_by("shard", "key").agg(pl.col("reason").first())
    keyed = expected.filter(pl.col("key").is_not_null()).join(q, on=["shard", "key"], how="left").select(
        found=pl.col("reason").is_not_null(), right=(pl.col("reason") == pl.col("expected_quarantine")).fill_null(False))
    keyless_q = quarantine.filter(pl.col("key").is_null()).group_by("shard").agg(reasons=pl.col("reason"))
    keyless = expected.filter(pl.col("key").is_null()).join(keyless_q, on="shard", how="left").select(
        found=pl.col("reasons").is_not_null(), right=pl.col("reasons").list.contains(pl.col("expected_quarantine")).fill_null(False))
    got = pl.concat([keyed, keyless])
    _ratio(rows, "raw_pairs", "quarantine_recall", got["found"].sum(), got.height)
    _ratio(rows, "raw_pairs", "quarantine_reason_accuracy", got["right"].sum(), got.height)
    good = truth.filter(pl.col("expected_quarantine").is_null())
    # a later record under a good pair's key (duplicate_key) is quarantined while the pair itself is ingested
    wrongly = good.join(q, on=["shard", "key"], how="semi").join(raw.select("uid"), on="uid", how="anti").height
    _ratio(rows, "raw_pairs", "good_pairs_quarantined", wrongly, good.height)
    _ratio(rows, "raw_pairs", "good_pairs_ingested", good.join(raw.select("uid"), on="uid", how="semi").height, good.height)
    return rows


def filter_metrics(truth: pl.DataFrame, scored: pl.DataFrame) -> list[tuple]:
    """Precision and recall of scored_pairs' keep decision for each kind of bad alt-text."""
    rows: list = []
    df = scored.join(truth.select("uid", "noise"), on="uid", how="inner")
    dropped = df.filter(~pl.col("keep"))
    _ratio(rows, "scored_pairs", "filter_precision", dropped["noise"].is_in(FALSE_CAPTION).sum(), dropped.height)
    _ratio(rows, "scored_pairs", "filter_recall", dropped["noise"].is_in(FALSE_CAPTION).sum(), df["noise"].is_in(FALSE_CAPTION).sum())
    low = dropped.filter(pl.col("drop_reason").is_in(LOW_ALIGNMENT_REASONS))
    flagged_text = dropped.filter(pl.col("drop_reason").is_in(["flag:boilerplate_caption", "flag:caption_too_short"]))
    for kind, kinds, claimed in (("misaligned", MISALIGNED, low), ("wrong_attribute", ("wrong_attribute",), None), ("boilerplate", BOILERPLATE, flagged_text)):
        of_kind = df.filter(pl.col("noise").is_in(kinds))
        _ratio(rows, "scored_pairs", f"{kind}_recall", (~of_kind["keep"]).sum(), of_kind.height)
        if claimed is not None:  # wrong attributes are dropped for the same reason as misaligned pairs: one precision
            # precision of the reason that claims this kind: a pair dropped for it had a false alt-text
            _ratio(rows, "scored_pairs", f"{kind}_precision", claimed["noise"].is_in(FALSE_CAPTION).sum(), claimed.height)
    # the same drops judged more leniently: a lazy partial alt-text ("red circle") is weak, if not false
    _ratio(rows, "scored_pairs", "low_alignment_precision_false_or_partial", low["noise"].is_in([*FALSE_CAPTION, "partial"]).sum(), low.height)
    kept = df.filter(pl.col("keep"))
    _ratio(rows, "scored_pairs", "kept_with_false_alt_text", kept["noise"].is_in(FALSE_CAPTION).sum(), kept.height)
    # where the drops went, by what each pair really is (true captions dropped show up here too)
    per_kind = df.group_by("noise").agg(n=pl.len(), dropped=(~pl.col("keep")).sum()).sort("noise")
    for kind, n, dropped in per_kind.iter_rows():
        _ratio(rows, "scored_pairs", f"drop_rate:{kind}", dropped, n)
    return rows


def duplicate_metrics(truth: pl.DataFrame, scored: pl.DataFrame, selection: pl.DataFrame, manifest: pl.DataFrame, raw: pl.DataFrame | None = None,
                      semdedup: pl.DataFrame | None = None) -> list[tuple]:
    """Duplicate groups (the same scene's image repeated exactly or nearly): all but one copy should be flagged.

    Recall counts, per group with m copies at a stage's input, up to m-1 flagged copies; precision is
    the share of flagged copies that had another copy of their image beside them."""
    rows: list = []
    groups = truth.filter(pl.col("duplicate_group").is_not_null() & pl.col("noise").is_in(["exact_duplicate", "near_duplicate"]))
    dup_groups = groups["duplicate_group"].unique()
    member = truth.select("uid", "duplicate_group", "noise").with_columns(
        group=pl.when(pl.col("duplicate_group").is_in(dup_groups.to_list())).then(pl.col("duplicate_group")))
    stages = [
        ("scored_pairs", "", scored.select("uid", flagged=pl.col("drop_reason").is_in(["flag:duplicate_image", "flag:copy_image"]))),
        ("compressed_dataset", "", selection.select("uid", flagged=pl.col("drop_reason").is_in(DUPLICATE_REASONS))),
    ]
    if raw is not None and "duplicate_kind" in raw.columns:  # the global duplicate index's verdicts, before any filter
        of = pl.col("duplicate_of") if "duplicate_of" in raw.columns else pl.lit(None, dtype=pl.String)  # the image it was judged a copy of
        stages += [
            ("raw_pairs", "index_exact_", raw.select("uid", flagged=(pl.col("duplicate_kind") == "exact").fill_null(False), link=of)),
            ("raw_pairs", "index_exact_or_copy_", raw.select("uid", flagged=pl.col("duplicate_kind").is_not_null(), link=of)),
        ]
        if "candidate_of" in raw.columns:  # the candidate stage alone: an earlier image came up, verified or not
            stages.append(("raw_pairs", "index_candidate_", raw.select("uid", flagged=pl.col("duplicate_kind").is_not_null() | pl.col("candidate_of").is_not_null(),
                                                                        link=pl.coalesce(of, pl.col("candidate_of")))))
    if semdedup is not None and semdedup.height:  # SemDeDup by itself on every image, for comparison
        stages.append(("scored_pairs", "semdedup_alone_", semdedup.select("uid", "flagged")))
    for stage, prefix, frame in stages:
        df = frame.select("uid", "flagged").join(member, on="uid", how="inner")
        per_group = df.filter(pl.col("group").is_not_null()).group_by("group").agg(m=pl.len(), f=pl.col("flagged").sum())
        expected = int((per_group["m"] - 1).sum())
        found = int(per_group.select(pl.min_horizontal(pl.col("f"), pl.col("m") - 1)).sum().item())
        _ratio(rows, stage, f"{prefix}duplicate_recall", found, expected)
        _ratio(rows, stage, f"{prefix}duplicate_precision", found, int(df["flagged"].sum()))
        if prefix not in ("", "index_exact_") and "wrong_kind" in truth.columns:
            # per kind of copy (re-encode, resize, crop, shift): the share of the crawl's copies whose pair was found.
            # Counted per group: when the copy sorts before its original, the index flags the original, not the copy.
            kinds = df.join(truth.select("uid", "wrong_kind"), on="uid").filter(pl.col("noise") == "near_duplicate").with_columns(
                flagged=pl.col("uid").is_in(pair_found(frame, member).implode()))
            for kind, n, hit in kinds.group_by("wrong_kind").agg(n=pl.len(), hit=pl.col("flagged").sum()).sort("wrong_kind").iter_rows():
                _ratio(rows, stage, f"{prefix}{kind}_recall", int(hit), int(n))
        if prefix:
            continue
        paired = df.join(per_group.filter(pl.col("m") > 1).select("group"), on="group", how="semi")
        for kind in ("exact_duplicate", "near_duplicate"):
            # the later copies (as the crawl wrote them) that met another copy of their image at this stage
            copies = paired.filter(pl.col("noise") == kind)
            _ratio(rows, stage, f"{kind}_flagged", int(copies["flagged"].sum()), copies.height)
    exported = manifest.select("uid").join(member, on="uid", how="inner").filter(pl.col("group").is_not_null())
    extra = exported.height - exported["group"].n_unique()
    _ratio(rows, "compressed_dataset", "exported_duplicate_copies", extra, manifest.height)
    return rows


def pair_found(frame: pl.DataFrame, member: pl.DataFrame) -> pl.Series:
    """Uids whose duplicate pair was found: a flagged row and the image it was linked to (``link``) when both are in the
    same truth group; without links (SemDeDup alone), every member of a group with a flagged member."""
    if "link" in frame.columns:
        g = member.select("uid", "group")
        right = (frame.filter(pl.col("flagged") & pl.col("link").is_not_null()).join(g, on="uid")
                 .join(g.rename({"uid": "link", "group": "group_of"}), on="link").filter(pl.col("group") == pl.col("group_of")))
        return pl.concat([right["uid"], right["link"]]).unique()
    df = frame.join(member, on="uid").filter(pl.col("group").is_not_null())
    return df.filter(pl.col("flagged").any().over("group"))["uid"]


def caption_metrics(truth: pl.DataFrame, stage: str, captions: pl.DataFrame, column: str, label: str) -> list[tuple]:
    """How often ``column`` names every object's colour and shape (and nothing else), and how often it
    names an object that is not there (hallucination), over in-world images."""
    df = captions.select("uid", pl.col(column).alias("text")).join(truth.filter(IN_WORLD).select("uid", "objects"), on="uid", how="inner")
    df = df.filter(pl.col("text").is_not_null())
    right = sum(names_every_object(t, o) for t, o in zip(df["text"], df["objects"].to_list()))
    halluc = sum(hallucinated(t, o) > 0 for t, o in zip(df["text"], df["objects"].to_list()))
    rows: list = []
    _ratio(rows, stage, f"{label}_attribute_accuracy", right, df.height)
    _ratio(rows, stage, f"{label}_hallucination_rate", halluc, df.height)
    return rows


def level_metrics(truth: pl.DataFrame, scored: pl.DataFrame, raw: pl.DataFrame) -> list[tuple]:
    """Share of pairs whose alt-text names every object right, per alignment level: must not fall as the level rises."""
    df = scored.select("uid", "alignment_level").join(raw.select("uid", "caption"), on="uid").join(truth.filter(IN_WORLD).select("uid", "objects"), on="uid")
    df = df.with_columns(right=pl.Series([names_every_object(t, o) for t, o in zip(df["caption"], df["objects"].to_list())], dtype=pl.Boolean))
    per = df.group_by("alignment_level").agg(n=pl.len(), right=pl.col("right").sum()).sort("alignment_level")
    rows: list = []
    for level, n, right in per.iter_rows():
        _ratio(rows, "scored_pairs", f"level_{level}_alt_text_correct", right, n)
    values = [r / n for _, n, r in per.iter_rows()]
    monotonic = all(b >= a for a, b in zip(values, values[1:]))
    rows.append(("scored_pairs", "alignment_levels_monotonic", float(monotonic), int(per["n"].sum())))
    return rows


def stage_truth(truth: pl.DataFrame, lake: LakeFrames) -> pl.DataFrame:
    """Every stage's truth figures as rows (stage, metric, value, n)."""
    rows = quarantine_metrics(truth, lake.quarantine, lake.raw)
    rows += caption_metrics(truth, "raw_pairs", lake.raw, "caption", "alt_text")
    rows += filter_metrics(truth, lake.scored)
    rows += level_metrics(truth, lake.scored, lake.raw)
    rows += caption_metrics(truth, "recaptioned_pairs", lake.recaptioned, "synthetic_caption", "synthetic")
    accepted = lake.fused.filter(pl.col("fusion_status") == "accepted")
    rows += caption_metrics(truth, "fused_captions", accepted, "fused_caption", "fused")
    rows += caption_metrics(truth, "fused_captions", lake.fused, "final_caption", "final")
    rows += duplicate_metrics(truth, lake.scored, lake.selection, lake.manifest, lake.raw, lake.semdedup)
    rows += caption_metrics(truth, "compressed_dataset", lake.manifest, "final_caption", "exported")
    kept_alt = lake.manifest.select("uid").join(lake.raw.select("uid", "caption"), on="uid")
    rows += caption_metrics(truth, "compressed_dataset", kept_alt, "caption", "exported_alt_text")
    return pl.DataFrame(rows, schema=STAGE_TRUTH_SCHEMA, orient="row")
