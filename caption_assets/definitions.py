"""The Dagster code location: assets, checks, jobs, sensors and resources, configured from settings."""

from __future__ import annotations

from dagster import Definitions

from caption_assets.assets.raw_pairs import raw_pairs, raw_pairs_reconcile
from caption_assets.assets.reward_model import alignment_reward_model
from caption_assets.assets.scored_pairs import scored_pairs
from caption_assets.jobs import ingest_job, reward_model_job, shard_chain_job, shard_models_job
from caption_assets.sensors import crawl_sensor
from caption_assets.settings import Settings, load_settings
from resources import AnnotationSource, ClipScorer, CrawlSource, LakeStorage, QualityWarehouse


def build_resources(settings: Settings) -> dict[str, object]:
    return {
        "crawl": CrawlSource(crawl_dir=str(settings.crawl_dir)),
        "lake": LakeStorage(root=str(settings.lake_dir)),
        "warehouse": QualityWarehouse(path=str(settings.warehouse_path)),
        "annotations": AnnotationSource(folder=str(settings.annotations_dir)),
        "clip": ClipScorer(**settings.clip, models_dir=str(settings.data_dir / "models")),
    }


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or load_settings()
    return Definitions(
        assets=[raw_pairs, alignment_reward_model, scored_pairs],
        asset_checks=[raw_pairs_reconcile],
        jobs=[ingest_job, shard_chain_job, shard_models_job, reward_model_job],
        sensors=[crawl_sensor],
        resources=build_resources(settings),
    )


defs = build_definitions()
