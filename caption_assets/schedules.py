"""Schedules: a nightly backfill of missing or stale shard partitions, and the compressed dataset's own cadence.

Dynamic partitions have no time window, so ``build_schedule_from_partitioned_job`` (which walks time
windows) does not apply. The nightly schedule reads the per-shard stages and what each is computed
from off the asset graph of the definitions it runs in (``context.repository_def``): a new asset or
dependency changes the plan without touching this module. It asks the instance which shards miss a
stage or hold one older than an input, and the warehouse and the duplicate index which shards were
scored with older alignment levels or hold stale duplicate verdicts, and requests a ``shard_chain``
run for each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from dagster import AssetKey, DagsterEventType, DagsterInstance, DefaultScheduleStatus, RunRequest, ScheduleDefinition, ScheduleEvaluationContext, schedule

from caption_assets.assets.alignment_levels import current_levels
from caption_assets.jobs import PER_SHARD, compress_job, shard_chain_job
from caption_assets.partitions import shards_partitions
from resources import DuplicateIndex, LakeStorage, QualityWarehouse

if TYPE_CHECKING:
    from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph

DATA_VERSION_TAG = "dagster/data_version"
VERSION_HISTORY = 100  # materializations of a cross-shard input read back to date its current data version


def shard_stages(graph: BaseAssetGraph) -> dict[str, tuple[str, ...]]:
    """What a ``shard_chain`` run materializes -> the assets each is computed from, in dependency order, off the asset graph."""
    chain = PER_SHARD.resolve(graph)
    stages = {}
    for key in graph.toposorted_asset_keys:
        if key in chain:
            parents = (graph.get(p) for p in graph.get(key).parent_keys)
            stages[key.to_user_string()] = tuple(sorted(p.key.to_user_string() for p in parents if p.is_materializable))
    return stages


def partitions_needing_work(
    stages: Mapping[str, tuple[str, ...]], latest: Mapping[str, Mapping[str, int]], since: Mapping[str, int | None], partitions: Iterable[str]
) -> dict[str, str]:
    """Partition -> why it needs a run ("missing <stage>", "stale <stage>: <input> is newer").

    ``latest``: per-shard asset -> partition -> storage id of its latest materialization; ``since``:
    cross-shard input -> storage id from which it has held its current data version (so re-materializing
    the same reward model or the same level edges restales nothing).
    """
    todo = {}
    for p in partitions:
        for stage, inputs in stages.items():
            mine = latest.get(stage, {}).get(p)
            if mine is None:
                todo[p] = f"missing {stage}"
                break
            newer = [u for u in inputs if ((latest[u].get(p) if u in latest else since.get(u)) or 0) > mine]
            if newer:
                todo[p] = f"stale {stage}: {newer[0]} is newer"
                break
    return todo


def stale_inputs(warehouse: QualityWarehouse, lake: LakeStorage, duplicates: DuplicateIndex) -> dict[str, str]:
    """Partition -> why: scored with alignment levels other than the current ones, or stale duplicate verdicts."""
    stale = {p: "stale duplicate verdicts" for p in duplicates.stale_shards()}
    levels = current_levels(lake)
    if levels is not None:
        old = warehouse.query(
            "SELECT partition FROM versions WHERE stage = 'scored_pairs' AND name = 'alignment_levels' AND version <> ?", [levels["version"]]
        )
        stale |= {p: "stale alignment_levels" for p in old["partition"].to_list()}
    return stale


def latest_materializations(instance: DagsterInstance, stages: Iterable[str]) -> dict[str, Mapping[str, int]]:
    return {s: instance.get_latest_storage_id_by_partition(AssetKey(s), DagsterEventType.ASSET_MATERIALIZATION) for s in stages}


def current_version_since(instance: DagsterInstance, key: AssetKey) -> int | None:
    """Storage id of the oldest materialization in the latest unbroken run of the asset's current data version."""
    records = instance.fetch_materializations(key, limit=VERSION_HISTORY).records  # newest first
    if not records:
        return None
    versions = [(r.asset_materialization.tags or {}).get(DATA_VERSION_TAG) if r.asset_materialization else None for r in records]
    since = records[0].storage_id
    for record, version in zip(records[1:], versions[1:]):
        if version is None or version != versions[0]:
            break
        since = record.storage_id
    return since


def plan(instance: DagsterInstance, graph: BaseAssetGraph, partitions: Iterable[str]) -> dict[str, str]:
    """Shards missing a stage or holding one older than its inputs, from the asset graph and the instance."""
    stages = shard_stages(graph)
    latest = latest_materializations(instance, stages)
    cross_shard = {u for inputs in stages.values() for u in inputs if u not in stages and graph.get(AssetKey.from_user_string(u)).partitions_def is None}
    return partitions_needing_work(stages, latest, {u: current_version_since(instance, AssetKey.from_user_string(u)) for u in cross_shard}, partitions)


def build_schedules(running: bool) -> list[ScheduleDefinition]:
    status = DefaultScheduleStatus.RUNNING if running else DefaultScheduleStatus.STOPPED

    @schedule(job_name=shard_chain_job.name, cron_schedule="0 2 * * *", default_status=status, description=(
        "Nightly: run the shard chain for every shard that is missing a stage, has a stage older than an input (per the asset graph), "
        "was scored with older alignment levels, or holds stale duplicate verdicts."))
    def nightly_shard_backfill(context: ScheduleEvaluationContext, warehouse: QualityWarehouse, lake: LakeStorage, duplicates: DuplicateIndex):
        partitions = context.instance.get_dynamic_partitions(shards_partitions.name)
        registered = set(partitions)
        stale = {p: why for p, why in stale_inputs(warehouse, lake, duplicates).items() if p in registered}
        todo = plan(context.instance, context.repository_def.asset_graph, partitions) | stale  # the input that went stale says why
        return [RunRequest(partition_key=p, run_key=f"{context.scheduled_execution_time:%Y%m%d}:{p}", tags={"reason": why}) for p, why in sorted(todo.items())]

    compress_daily = ScheduleDefinition(
        name="daily_compressed_dataset", job_name=compress_job.name, cron_schedule="0 5 * * *", default_status=status,
        description="Rebuild the compressed dataset from every fused shard, after the nightly backfill.",
    )
    return [nightly_shard_backfill, compress_daily]
