"""The Dagster code location: assets, checks, jobs, sensors and resources, configured from settings."""

from __future__ import annotations

from dagster import Definitions

from caption_assets.assets.raw_pairs import raw_pairs, raw_pairs_reconcile
from caption_assets.jobs import ingest_job, shard_chain_job
from caption_assets.sensors import crawl_sensor
from caption_assets.settings import Settings, load_settings
from resources import CrawlSource, LakeStorage, QualityWarehouse


def build_resources(settings: Settings) -> dict[str, object]:
    return {
        "crawl": CrawlSource(crawl_dir=str(settings.crawl_dir)),
        "lake": LakeStorage(root=str(settings.lake_dir)),
        "warehouse": QualityWarehouse(path=str(settings.warehouse_path)),
    }


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or load_settings()
    return Definitions(
        assets=[raw_pairs],
        asset_checks=[raw_pairs_reconcile],
        jobs=[ingest_job, shard_chain_job],
        sensors=[crawl_sensor],
        resources=build_resources(settings),
    )


defs = build_definitions()
