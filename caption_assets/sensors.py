"""The crawl sensor: each shard file in the crawl folder becomes a dynamic partition.

New shards get a partition and an ingest run; a shard file that changed on disk (new mtime or
size) gets a fresh ingest run. The cursor remembers what was seen, so each change triggers once.
"""


import json
from pathlib import Path

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, sensor

from caption_assets.jobs import ingest_job
from caption_assets.partitions import shards_partitions
from resources import CrawlSource


def shard_signatures(crawl: CrawlSource) -> dict[str, str]:
    sigs = {}
    for key in crawl.list_shards():
        st = (Path(crawl.crawl_dir) / key).stat()
        sigs[key] = f"{st.st_mtime_ns}:{st.st_size}"
    return sigs


def evaluate_crawl(context: SensorEvaluationContext, crawl: CrawlSource) -> SensorResult:
    previous: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current = shard_signatures(crawl)
    registered = set(context.instance.get_dynamic_partitions(shards_partitions.name))
    new_keys = [k for k in current if k not in registered]
    changed = [k for k, sig in current.items() if previous.get(k) != sig]
    return SensorResult(
        run_requests=[RunRequest(partition_key=k, run_key=f"{k}@{current[k]}") for k in changed],
        dynamic_partitions_requests=[shards_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=json.dumps(current, sort_keys=True),
    )


def build_crawl_sensor(running: bool = True):
    @sensor(
        name="crawl_sensor",
        job=ingest_job,
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING if running else DefaultSensorStatus.STOPPED,
        description="Registers one `shards` partition per crawl shard file and requests its ingest when it appears or changes.",
    )
    def crawl_sensor(context: SensorEvaluationContext, crawl: CrawlSource) -> SensorResult:
        return evaluate_crawl(context, crawl)

    return crawl_sensor


crawl_sensor = build_crawl_sensor()
