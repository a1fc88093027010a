"""The crawl sensor: each shard in the crawl folder becomes a dynamic partition.

New shards get a partition and an ingest run; a shard that changed on disk (new mtime or size, its
img2dataset sidecar included) gets a fresh ingest run, and so does a shard the duplicate index marks
stale (a shard that sorts before it arrived later and holds the first copy of one of its images).
The cursor remembers what was seen, so each change triggers once.
"""


import json
from pathlib import Path

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, sensor

from caption_assets.jobs import ingest_job
from caption_assets.partitions import shards_partitions
from caption_assets.shards import shard_signature
from resources import CrawlSource, DuplicateIndex


def shard_signatures(crawl: CrawlSource) -> dict[str, str]:
    return {key: shard_signature(Path(crawl.crawl_dir) / key) for key in crawl.list_shards()}


def evaluate_crawl(context: SensorEvaluationContext, crawl: CrawlSource, duplicates: DuplicateIndex | None = None) -> SensorResult:
    previous: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current = shard_signatures(crawl)
    registered = set(context.instance.get_dynamic_partitions(shards_partitions.name))
    new_keys = [k for k in current if k not in registered]
    changed = [k for k, sig in current.items() if previous.get(k) != sig]
    requests = [RunRequest(partition_key=k, run_key=f"{k}@{current[k]}") for k in changed]
    stale = duplicates.stale_shards() if duplicates is not None else {}
    requests += [
        RunRequest(partition_key=k, run_key=f"{k}@duplicates:{epoch}", tags={"reason": "stale duplicate verdicts"})
        for k, epoch in stale.items() if k in current and k not in changed
    ]
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[shards_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=json.dumps(current, sort_keys=True),
    )


def build_crawl_sensor(running: bool = True):
    @sensor(
        name="crawl_sensor",
        job_name=ingest_job.name,
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING if running else DefaultSensorStatus.STOPPED,
        description=(
            "Registers one `shards` partition per crawl shard and requests its ingest when it appears or changes, "
            "or when the duplicate index marks its verdicts stale."
        ),
    )
    def crawl_sensor(context: SensorEvaluationContext, crawl: CrawlSource, duplicates: DuplicateIndex) -> SensorResult:
        return evaluate_crawl(context, crawl, duplicates)

    return crawl_sensor


crawl_sensor = build_crawl_sensor()
