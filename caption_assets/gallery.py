"""A gallery of sampled pairs per outcome for the HTML report: look at the data before training on it.

Outcomes come from every stage (quarantine reasons, filter reasons, fusion fallbacks, duplicate and
selection reasons, selected). A few pairs per outcome are drawn deterministically (by md5 of the uid and
a seed) with DuckDB over the lake's parquet files; only those pairs' rows and images are then read.
Thumbnails are embedded as small JPEGs, so the page stands alone.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import duckdb
from PIL import Image

from caption_assets.ingest import QUARANTINE_UID_SQL
from caption_assets.readers import read_image_bytes
from resources.storage import LakeStorage

THUMB_PX = 112


def sample_outcomes(lake: Path, per_outcome: int, seed: int = 0) -> list[dict[str, Any]]:
    """``per_outcome`` pairs for each outcome in the lake: dicts with uid, outcome and what each stage said."""
    store = LakeStorage(root=str(lake))
    parts, params = [], []

    def part(sql: str, files: list[str]) -> None:
        if files:
            parts.append(sql)
            params.append(files)

    for stage in ("raw_pairs", "scored_pairs", "recaptioned_pairs"):
        part(f"SELECT {QUARANTINE_UID_SQL} AS uid, 'quarantined at {stage}: ' || reason AS outcome, message FROM read_parquet(?)", store.files(f"{stage}_quarantine"))
    part("SELECT uid, 'filtered: ' || drop_reason AS outcome, NULL AS message FROM read_parquet(?) WHERE NOT keep", store.files("scored_pairs"))
    part("SELECT uid, 'fusion fallback: ' || fusion_status AS outcome, NULL AS message FROM read_parquet(?) WHERE fusion_status <> 'accepted'", store.files("fused_captions"))
    selection = store.asset_dir("compressed_dataset") / "selection.parquet"
    if selection.exists():
        part("SELECT uid, CASE WHEN selected THEN 'selected' ELSE 'compression: ' || drop_reason END AS outcome, NULL AS message FROM read_parquet(?)", [str(selection)])
    if not parts or per_outcome <= 0:
        return []
    con = duckdb.connect()
    sql = (f"SELECT uid, outcome, message FROM (SELECT *, row_number() OVER (PARTITION BY outcome ORDER BY md5(uid || ?)) AS r "
           f"FROM ({' UNION ALL '.join(parts)})) WHERE r <= ? ORDER BY outcome = 'selected' DESC, outcome, uid")
    picked = [dict(zip(("uid", "outcome", "message"), r)) for r in con.execute(sql, [str(seed), *params, per_outcome]).fetchall()]
    uids = sorted({p["uid"] for p in picked})
    details: dict[str, dict[str, Any]] = {u: {} for u in uids}
    wanted = {
        "raw_pairs": ["container", "image_path", "image_member", "image_offset", "image_length", "caption"],
        "scored_pairs": ["clip_score", "reward_score", "alignment_level"],
        "recaptioned_pairs": ["synthetic_caption"],
        "fused_captions": ["fused_caption", "final_caption", "final_source", "final_score"],
    }
    for asset, cols in wanted.items():
        files = store.files(asset)
        if not files or not uids:
            continue
        rel = con.execute(f"SELECT uid, {', '.join(cols)} FROM read_parquet(?) WHERE uid IN (SELECT unnest(?))", [files, uids])
        for row in rel.fetchall():
            details[row[0]].update(zip(cols, row[1:]))
    return [{**p, **details.get(p["uid"], {})} for p in picked]


def thumbnail(row: dict[str, Any], px: int = THUMB_PX) -> str | None:
    """Base64 JPEG of the pair's image, or None when it has no readable image (quarantined ones often)."""
    if row.get("container") is None:
        return None
    try:
        data = read_image_bytes(row["container"], row["image_path"], row["image_member"], row["image_offset"], row["image_length"])
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (px, px))
            im = im.convert("RGB")
            im.thumbnail((px, px))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=70)
        return base64.b64encode(buf.getvalue()).decode()
    except Exception:  # noqa: BLE001 - a broken image is itself a finding; the card says so
        return None


FIELDS = (("alt-text", "caption"), ("synthetic", "synthetic_caption"), ("fused", "fused_caption"), ("final", "final_caption"),
          ("source", "final_source"), ("clip score", "clip_score"), ("reward", "reward_score"), ("level", "alignment_level"), ("note", "message"))
SCRIPT = """<script>
document.querySelectorAll('#gallery .filters button').forEach(function (b) {
  b.addEventListener('click', function () {
    var f = b.dataset.filter;
    document.querySelectorAll('#gallery .filters button').forEach(function (x) { x.classList.toggle('on', x === b); });
    document.querySelectorAll('#gallery .card').forEach(function (c) { c.hidden = !(f === '*' || c.dataset.outcome === f); });
  });
});
</script>"""
STYLE = """<style>#gallery .filters button{margin:.15rem;padding:.2rem .5rem;border:1px solid #bbb;background:#fafafa;border-radius:4px;cursor:pointer}
#gallery .filters button.on{background:#224;color:#fff}#gallery .cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:.6rem}
#gallery .card{border:1px solid #ddd;border-radius:6px;padding:.5rem;font-size:.8rem}#gallery .card img{width:112px;height:112px;object-fit:contain;background:#eee}
#gallery .card .outcome{font-weight:600;margin:.2rem 0}#gallery dl{margin:0}#gallery dt{color:#666;float:left;clear:left;width:5.5rem}#gallery dd{margin-left:5.8rem}
#gallery .noimg{width:112px;height:112px;background:#f3e3e3;display:flex;align-items:center;justify-content:center;color:#a33}</style>"""


def gallery_html(rows: list[dict[str, Any]]) -> str:
    """The report's gallery section: filter buttons by outcome, then one card per sampled pair."""
    if not rows:
        return ""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    buttons = f'<button data-filter="*" class="on">all ({len(rows)})</button>' + "".join(
        f'<button data-filter="{html.escape(o)}">{html.escape(o)} ({n})</button>' for o, n in counts.items())
    cards = []
    for r in rows:
        thumb = thumbnail(r)
        img = f'<img alt="{html.escape(r["uid"])}" src="data:image/jpeg;base64,{thumb}"/>' if thumb else '<div class="noimg">no image</div>'
        fields = "".join(
            f"<dt>{label}</dt><dd>{html.escape(f'{v:.3f}' if isinstance(v, float) else str(v))}</dd>"
            for label, key in FIELDS if (v := r.get(key)) is not None)
        cards.append(f'<div class="card" data-outcome="{html.escape(r["outcome"])}">{img}<div class="outcome">{html.escape(r["outcome"])}</div>'
                     f'<div class="uid"><code>{html.escape(r["uid"])}</code></div><dl>{fields}</dl></div>')
    return (f'{STYLE}<section id="gallery"><h2>Gallery: sampled pairs by outcome</h2>'
            f"<p>A few pairs per outcome, drawn deterministically; <code>caption-assets trace UID</code> shows one pair's whole path.</p>"
            f'<div class="filters">{buttons}</div><div class="cards">{"".join(cards)}</div></section>{SCRIPT}')
