"""Jobs over the asset graph.

The per-shard jobs are partitioned by ``shards`` (inferred from the selected assets); the cross-shard
assets (reward model, compressed dataset) have their own jobs. ``caption-assets run`` runs them in
dependency order: ingest every shard, train the referee and the levels, then the model stages shard by shard.
"""

from dagster import AssetSelection, ExecutorDefinition, define_asset_job
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

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

shared_models_job = define_asset_job(
    "shared_models",
    selection=AssetSelection.assets("alignment_reward_model", "alignment_levels"),
    description="The referee and the alignment levels together: both read every ingested shard, and the model stages read both.",
)

compress_job = define_asset_job(
    "compress_dataset",
    selection=AssetSelection.assets("compressed_dataset"),
    description="Dedup, select and export the compressed dataset from every fused shard.",
)

eval_job = define_asset_job(
    "evaluate_curation",
    selection=AssetSelection.assets("curation_eval"),
    description="Train the fixed recipe on the curated set and its baselines; judge every stage against the truth table.",
)


# Jobs whose steps load no model: their step processes need not import torch, open_clip or transformers.
WITHOUT_MODELS = (ingest_job, compress_job)


def with_executor(job: UnresolvedAssetJobDefinition, executor: ExecutorDefinition | None, hooks: set | None = None) -> UnresolvedAssetJobDefinition:
    """The same job with its own executor (``build_definitions`` gives the model-free jobs a lighter one) and step hooks
    (on Ray: each step records its node on the run)."""
    if executor is None and not hooks:
        return job
    return define_asset_job(job.name, selection=job.selection, description=job.description, tags=job.tags, executor_def=executor,
                            partitions_def=job.partitions_def, hooks=hooks or job.hooks)
