"""Warehouse compaction in the daemon: the one process, on the head machine, that folds the steps' row files.

Steps write one parquet file per table and partition from any machine; a full-table read opens each of them,
so they are folded into one compacted file per table now and then. Compaction must run in one process at a
time (``caption_assets.warehouse_rows``): the daemon's sensor and the CLI, both on the machine that holds the
instance, share a file lock there; no step compacts.
"""

from __future__ import annotations

from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from resources import QualityWarehouse


def build_warehouse_compaction_sensor(running: bool = True, interval_s: int = 600):
    @sensor(
        name="warehouse_compaction",
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING if running else DefaultSensorStatus.STOPPED,
        description="Folds the warehouse row files the steps wrote into one compacted file per table and refreshes "
                    "the DuckDB file's views (launches no run).",
    )
    def warehouse_compaction(context: SensorEvaluationContext, warehouse: QualityWarehouse) -> SkipReason:
        before = warehouse.file_count()
        warehouse.publish()
        return SkipReason(f"compacted {before} row files; {warehouse.file_count()} written since")

    return warehouse_compaction
