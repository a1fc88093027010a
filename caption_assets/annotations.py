"""Human preference annotations for the reward model: JSONL files under the annotations folder.

One JSON object per line::

    {"image_key": "<raw_pairs.uid>", "captions": ["...", "...", ...], "preferred": 0,
     "criteria": {"accuracy": 0, "completeness": 2}}   # optional: winner index per criterion

``preferred`` indexes ``captions`` (two or more). Lines that do not fit are counted and reported, not used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Annotations:
    records: list[dict[str, Any]]
    rejected: dict[str, int]


def validate(obj: Any) -> str | None:
    """None when the record fits the schema, else the reason."""
    if not isinstance(obj, dict):
        return "not_an_object"
    if not isinstance(obj.get("image_key"), str):
        return "no_image_key"
    caps = obj.get("captions")
    if not isinstance(caps, list) or len(caps) < 2 or not all(isinstance(c, str) and c.strip() for c in caps):
        return "need_two_or_more_captions"
    best = obj.get("preferred")
    if not isinstance(best, int) or isinstance(best, bool) or not 0 <= best < len(caps):
        return "preferred_out_of_range"
    return None


def read_annotations(folder: Path) -> Annotations:
    records, rejected = [], {}
    for file in sorted(Path(folder).glob("*.jsonl")):
        for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = None
            reason = validate(obj) if obj is not None else "bad_json"
            if reason:
                rejected[reason] = rejected.get(reason, 0) + 1
            else:
                records.append(obj)
    return Annotations(records, rejected)
