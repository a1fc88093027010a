"""Jobs over the asset graph: the per-shard chain, and ingest alone (what the crawl sensor starts)."""

from dagster import AssetSelection, define_asset_job

from caption_assets.partitions import shards_partitions

ingest_job = define_asset_job(
    "ingest_shard",
    selection=AssetSelection.assets("raw_pairs"),
    partitions_def=shards_partitions,
    description="Ingest one crawl shard into raw_pairs (and its checks).",
)

shard_chain_job = define_asset_job(
    "shard_chain",
    selection=AssetSelection.tag("scope", "shard"),
    partitions_def=shards_partitions,
    description="Every per-shard asset for one shard, raw_pairs first.",
)
