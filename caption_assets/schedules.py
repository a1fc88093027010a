"""Schedules: a nightly backfill of missing or stale shard partitions, and the compressed dataset's own cadence.

Dynamic partitions have no time window, so ``build_schedule_from_partitioned_job`` (which walks time
windows) does not apply; the nightly schedule asks the instance which shards are missing a stage or
hold a stage older than its upstream, and the warehouse and the duplicate index which shards were
scored with older alignment levels or hold stale duplicate verdicts, and requests a ``shard_chain``
run for each of those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dagster import AssetKey, DagsterEventType, DagsterInstance, DefaultScheduleStatus, RunRequest, ScheduleDefinition, ScheduleEvaluationContext, schedule

from caption_assets.assets.alignment_levels import current_levels
from caption_assets.jobs import compress_job, shard_chain_job
from caption_assets.partitions import shards_partitions
from resources import DuplicateIndex, LakeStorage, QualityWarehouse

# stage -> the stages it is computed from
UPSTREAM = {
    "scored_pairs": ("raw_pairs",),
    "recaptioned_pairs": ("scored_pairs",),
    "vision_expert_tags": ("scored_pairs",),
    "fused_captions": ("recaptioned_pairs", "vision_expert_tags"),
}
STAGES = ("raw_pairs", *UPSTREAM)


def partitions_needing_work(latest: Mapping[str, Mapping[str, int]], partitions: Iterable[str]) -> dict[str, str]:
    """Partition -> why it needs a run ("missing <stage>" or "stale <stage>"), from latest storage ids."""
    todo = {}
    for p in partitions:
        for stage in STAGES:
            if p not in latest.get(stage, {}):
                todo[p] = f"missing {stage}"
                break
            if any(latest[u][p] > latest[stage][p] for u in UPSTREAM.get(stage, ()) if p in latest.get(u, {})):
                todo[p] = f"stale {stage}"
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


def latest_materializations(instance: DagsterInstance) -> dict[str, Mapping[str, int]]:
    return {s: instance.get_latest_storage_id_by_partition(AssetKey(s), DagsterEventType.ASSET_MATERIALIZATION) for s in STAGES}


def build_schedules(running: bool) -> list[ScheduleDefinition]:
    status = DefaultScheduleStatus.RUNNING if running else DefaultScheduleStatus.STOPPED

    @schedule(job=shard_chain_job, cron_schedule="0 2 * * *", default_status=status, description=(
        "Nightly: run the shard chain for every shard that is missing a stage, has a stage older than its upstream, "
        "was scored with older alignment levels, or holds stale duplicate verdicts."))
    def nightly_shard_backfill(context: ScheduleEvaluationContext, warehouse: QualityWarehouse, lake: LakeStorage, duplicates: DuplicateIndex):
        partitions = context.instance.get_dynamic_partitions(shards_partitions.name)
        registered = set(partitions)
        stale = {p: why for p, why in stale_inputs(warehouse, lake, duplicates).items() if p in registered}
        todo = stale | partitions_needing_work(latest_materializations(context.instance), partitions)
        return [RunRequest(partition_key=p, run_key=f"{context.scheduled_execution_time:%Y%m%d}:{p}", tags={"reason": why}) for p, why in sorted(todo.items())]

    compress_daily = ScheduleDefinition(
        name="daily_compressed_dataset", job=compress_job, cron_schedule="0 5 * * *", default_status=status,
        description="Rebuild the compressed dataset from every fused shard, after the nightly backfill.",
    )
    return [nightly_shard_backfill, compress_daily]
