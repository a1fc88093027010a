"""Jobs over the asset graph.

The per-shard jobs are partitioned by ``shards`` (inferred from the selected assets); the cross-shard
assets (reward model, compressed dataset) have their own jobs. ``caption-assets run`` runs them in
dependency order: ingest every shard, train the referee, then the model stages shard by shard.
"""

from dagster import AssetSelection, define_asset_job

PER_SHARD = AssetSelection.tag("scope", "shard")

ingest_job = define_asset_job(
    "ingest_shard",
    selection=AssetSelection.assets("raw_pairs"),
    description="Ingest one crawl shard into raw_pairs (and its checks). Started by the crawl sensor.",
)

shard_chain_job = define_asset_job(
    "shard_chain",
    selection=PER_SHARD,
    description="Every per-shard asset for one shard, raw_pairs first.",
)

shard_models_job = define_asset_job(
    "shard_models",
    selection=PER_SHARD - AssetSelection.assets("raw_pairs"),
    description="The model stages (scoring onwards) for one already-ingested shard.",
)

reward_model_job = define_asset_job(
    "train_reward_model",
    selection=AssetSelection.assets("alignment_reward_model"),
    description="Train the alignment reward model on the preference annotations.",
)

levels_job = define_asset_job(
    "compute_alignment_levels",
    selection=AssetSelection.assets("alignment_levels"),
    description="Global alignment-level boundaries over a reference sample of every ingested shard (versioned; scored_pairs uses them).",
)

compress_job = define_asset_job(
    "compress_dataset",
    selection=AssetSelection.assets("compressed_dataset"),
    description="Dedup, select and export the compressed dataset from every fused shard.",
)

eval_job = define_asset_job(
    "evaluate_curation",
    selection=AssetSelection.assets("curation_eval"),
    description="Train the fixed small-CLIP recipe on the curated set and its baselines; judge every stage against the truth table.",
)
