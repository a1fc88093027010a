"""One pair's path through every stage, read straight from the lake with DuckDB (only its shard's files).

A uid is ``<shard>::<key>`` (``<shard>::@<member>`` for a quarantine row without a key: a cut or
unreadable shard, an unsafe member name); each per-shard stage keeps one parquet file per shard, so a trace opens at
most one file per stage, plus the export's selection and manifest, whatever the size of the lake.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
import duckdb

from caption_assets.ingest import QUARANTINE_UID_SQL
from resources.storage import LakeStorage

STAGES = ("raw_pairs", "scored_pairs", "recaptioned_pairs", "vision_expert_tags", "fused_captions", "compressed_dataset")
COLUMNS = {
    "raw_pairs": ["container", "image_path", "image_member", "image_offset", "image_length", "sha256", "phash", "width", "height", "format",
                  "caption", "url", "flags", "primary_flag"],
    "scored_pairs": ["clip_score", "reward_score", "alignment_level", "keep", "drop_reason"],
    "recaptioned_pairs": ["candidates", "candidate_scores", "synthetic_caption", "synthetic_score", "decoding", "captioner"],
    "vision_expert_tags": ["ocr_text", "ocr_confidence", "tags", "tag_scores"],
    "fused_captions": ["fused_caption", "fused_score", "fusion_status", "final_caption", "final_source", "final_score", "fuser"],
}


def split_uid(uid: str) -> tuple[str, str]:
    shard, sep, key = uid.rpartition("::")
    if not sep or not shard or not key:
        raise ValueError(f"{uid!r} is not a uid (<shard>::<key>)")
    return shard, key


def _rows(con: duckdb.DuckDBPyConnection, path: Path, columns: list[str], where: str, params: list) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    have = {r[0] for r in con.execute("SELECT name FROM parquet_schema(?)", [str(path)]).fetchall()}
    cols = ", ".join(f'"{c}"' for c in columns if c in have) or "1 AS present"
    rel = con.execute(f"SELECT {cols} FROM read_parquet(?) WHERE {where}", [str(path), *params])
    names = [d[0] for d in rel.description]
    return [dict(zip(names, row)) for row in rel.fetchall()]


def _outcome(stage: str, row: dict[str, Any]) -> tuple[str, str | None]:
    if stage == "scored_pairs":
        return ("kept", None) if row.get("keep") else ("filtered", row.get("drop_reason"))
    if stage == "fused_captions":
        status = row.get("fusion_status")
        return ("fused", None) if status == "accepted" else ("fallback", f"{status} -> {row.get('final_source')}")
    if stage == "raw_pairs":
        return ("flagged", row["primary_flag"]) if row.get("primary_flag") else ("passed", None)
    return ("done", None)


def trace(lake: Path, uid: str) -> dict[str, Any] | None:
    """Every stage's outcome for ``uid`` (None when no stage has heard of it)."""
    shard, key = split_uid(uid)
    store = LakeStorage(root=str(lake))
    con = duckdb.connect()
    out: dict[str, Any] = {"uid": uid, "shard": shard, "key": key, "stages": {}}
    for stage in STAGES[:-1]:
        rows = _rows(con, store.path(stage, shard), COLUMNS[stage], "uid = ?", [uid])
        if rows:
            outcome, reason = _outcome(stage, rows[0])
            out["stages"][stage] = {"outcome": outcome, "reason": reason, **rows[0]}
            continue
        q = _rows(con, store.path(f"{stage}_quarantine", shard), ["reason", "message", "member"], f"{QUARANTINE_UID_SQL} = ?", [uid])
        if q:
            out["stages"][stage] = {"outcome": "quarantined", **q[0]}
            break  # a quarantined pair goes no further
    raw = out["stages"].get("raw_pairs", {})
    if raw.get("sha256"):  # every copy of the same image bytes across the lake (the exact-duplicate group)
        files = store.files("raw_pairs")
        out["same_image"] = [r[0] for r in con.execute("SELECT uid FROM read_parquet(?) WHERE sha256 = ? ORDER BY uid", [files, raw["sha256"]]).fetchall()] if files else []
    export = store.asset_dir("compressed_dataset")
    sel = _rows(con, export / "selection.parquet", ["cluster", "selection_score", "selected", "drop_reason"], "uid = ?", [uid])
    if sel:
        s = sel[0]
        entry = {"outcome": "selected" if s["selected"] else "dropped", "reason": s["drop_reason"], **s}
        man = _rows(con, export / "manifest.parquet", ["key", "shard", "final_caption", "final_source"], "uid = ?", [uid])
        if man:
            tar = man[0]["shard"] if man[0]["shard"].endswith(".tar") else f"{man[0]['shard']}.tar"
            entry["exported_as"] = {"tar": str(export / tar), "key": man[0]["key"], "caption": man[0]["final_caption"], "source": man[0]["final_source"]}
        out["stages"]["compressed_dataset"] = entry
    return out if out["stages"] else None


def render_text(t: dict[str, Any]) -> str:
    """A few lines per stage, the way a person reads a pair's history."""
    lines = [f"{t['uid']}  (shard {t['shard']}, key {t['key']})"]
    for stage, s in t["stages"].items():
        head = f"  {stage:19s} {s['outcome']}" + (f" ({s['reason']})" if s.get("reason") else "")
        lines.append(head)
        detail = {k: v for k, v in s.items() if k not in ("outcome", "reason", "keep", "selected", "drop_reason") and v is not None}
        for k, v in [(f"{k}.{sk}", sv) for k, v in detail.items() for sk, sv in (v.items() if isinstance(v, dict) else [(None, v)])]:
            k = k.removesuffix(".None")
            if isinstance(v, float):
                v = f"{v:.4f}"
            text = str(v)
            lines.append(f"      {k:19s} {text if len(text) <= 110 else text[:107] + '...'}")
    if len(t.get("same_image", [])) > 1:
        lines.append(f"  same image bytes   {', '.join(u for u in t['same_image'] if u != t['uid'])}")
    return "\n".join(lines)
