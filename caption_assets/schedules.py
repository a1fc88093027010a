"""Schedules: a nightly backfill of missing or stale shard partitions, and the compressed dataset's own cadence.

Dynamic partitions have no time window, so ``build_schedule_from_partitioned_job`` (which walks time
windows) does not apply; the nightly schedule asks the instance which shards are missing a stage or
hold a stage older than its upstream, and requests a ``shard_chain`` run for each of those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dagster import AssetKey, DagsterEventType, DagsterInstance, DefaultScheduleStatus, RunRequest, ScheduleDefinition, ScheduleEvaluationContext, schedule

from caption_assets.jobs import compress_job, shard_chain_job
from caption_assets.partitions import shards_partitions

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


def latest_materializations(instance: DagsterInstance) -> dict[str, Mapping[str, int]]:
    return {s: instance.get_latest_storage_id_by_partition(AssetKey(s), DagsterEventType.ASSET_MATERIALIZATION) for s in STAGES}


def build_schedules(running: bool) -> list[ScheduleDefinition]:
    status = DefaultScheduleStatus.RUNNING if running else DefaultScheduleStatus.STOPPED

    @schedule(job=shard_chain_job, cron_schedule="0 2 * * *", default_status=status, description="Nightly: run the shard chain for every shard that is missing a stage or has a stage older than its upstream.")
    def nightly_shard_backfill(context: ScheduleEvaluationContext):
        partitions = context.instance.get_dynamic_partitions(shards_partitions.name)
        todo = partitions_needing_work(latest_materializations(context.instance), partitions)
        return [RunRequest(partition_key=p, run_key=f"{context.scheduled_execution_time:%Y%m%d}:{p}", tags={"reason": why}) for p, why in sorted(todo.items())]

    compress_daily = ScheduleDefinition(
        name="daily_compressed_dataset", job=compress_job, cron_schedule="0 5 * * *", default_status=status,
        description="Rebuild the compressed dataset from every fused shard, after the nightly backfill.",
    )
    return [nightly_shard_backfill, compress_daily]
