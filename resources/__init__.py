"""Dagster resources: crawl source, lake storage, quality warehouse and model resources.

The model resources import torch / transformers / open_clip, so they load on first use: code that
only needs storage or the warehouse (the CLI's report, ingest) does not pay for them.
"""

from importlib import import_module
from typing import Any

from resources.duplicate_index import DuplicateIndex
from resources.storage import AnnotationSource, CrawlSource, LakeStorage
from resources.warehouse import QualityWarehouse

_MODEL_RESOURCES = {
    "Captioner": "resources.captioner",
    "ClipScorer": "resources.clip",
    "VisionExperts": "resources.experts",
    "CaptionFuser": "resources.fuser",
}

__all__ = ["AnnotationSource", "DuplicateIndex", "CaptionFuser", "Captioner", "ClipScorer", "VisionExperts", "CrawlSource", "LakeStorage", "QualityWarehouse"]


def __getattr__(name: str) -> Any:
    if name in _MODEL_RESOURCES:
        return getattr(import_module(_MODEL_RESOURCES[name]), name)
    raise AttributeError(f"module 'resources' has no attribute {name!r}")
