"""Dagster resources: crawl source, lake storage, quality warehouse and model resources."""

from resources.captioner import Captioner
from resources.clip import ClipScorer
from resources.experts import VisionExperts
from resources.fuser import CaptionFuser
from resources.storage import AnnotationSource, CrawlSource, LakeStorage
from resources.warehouse import QualityWarehouse

__all__ = ["AnnotationSource", "CaptionFuser", "Captioner", "ClipScorer", "VisionExperts", "CrawlSource", "LakeStorage", "QualityWarehouse"]
