"""Dagster resources: crawl source, lake storage, quality warehouse and model resources."""

from resources.storage import CrawlSource, LakeStorage
from resources.warehouse import QualityWarehouse

__all__ = ["CrawlSource", "LakeStorage", "QualityWarehouse"]
