"""Jobs over the asset graph: the per-shard chain, and ingest alone (what the crawl sensor starts).

Both are partitioned by ``shards`` (inferred from the selected assets).
"""

from dagster import AssetSelection, define_asset_job


ingest_job = define_asset_job(
    "ingest_shard",
    selection=AssetSelection.assets("raw_pairs"),
    description="Ingest one crawl shard into raw_pairs (and its checks).",
)

shard_chain_job = define_asset_job(
    "shard_chain",
    selection=AssetSelection.tag("scope", "shard"),
    description="Every per-shard asset for one shard, raw_pairs first.",
)
