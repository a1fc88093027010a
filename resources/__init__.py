"""Dagster resources: crawl source, lake storage, quality warehouse and model resources.

Each loads on first use: the model resources import torch / transformers / open_clip and the duplicate
index imports the copy detector (scipy), so code that only needs storage or the warehouse (the CLI's
report, a sensor) does not pay for them.
"""

from importlib import import_module
from typing import Any

_MODEL_RESOURCES = {  # the resources that import torch / transformers / an LLM client
    "Captioner": "resources.captioner",
    "ClipScorer": "resources.clip",
    "VisionExperts": "resources.experts",
    "CaptionFuser": "resources.fuser",
}
_RESOURCES = {
    "DuplicateIndex": "resources.duplicate_index",
    "AnnotationSource": "resources.storage",
    "CrawlSource": "resources.storage",
    "LakeStorage": "resources.storage",
    "QualityWarehouse": "resources.warehouse",
    **_MODEL_RESOURCES,
}

__all__ = ["AnnotationSource", "DuplicateIndex", "CaptionFuser", "Captioner", "ClipScorer", "VisionExperts", "CrawlSource", "LakeStorage", "QualityWarehouse"]


def __getattr__(name: str) -> Any:
    if name in _RESOURCES:
        return getattr(import_module(_RESOURCES[name]), name)
    raise AttributeError(f"module 'resources' has no attribute {name!r}")
