"""Dagster resources: crawl source, lake storage, quality warehouse and model resources."""

from resources.clip import ClipScorer
from resources.storage import AnnotationSource, CrawlSource, LakeStorage
from resources.warehouse import QualityWarehouse

__all__ = ["AnnotationSource", "ClipScorer", "CrawlSource", "LakeStorage", "QualityWarehouse"]
