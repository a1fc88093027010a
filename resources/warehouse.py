"""The quality warehouse: funnel, quarantine and evaluation tables, queried with DuckDB, stored as parquet.

Steps may run on several machines (a Ray cluster), and no file lock can be trusted between them, so no step
ever opens a DuckDB file for writing: each write is a new parquet file per table and key (a partition's funnel,
a curation_eval run's figures), renamed into place (``caption_assets.warehouse_rows`` has the layout and why it
is right). Re-running a partition replaces its rows, so rows never duplicate.

Readers: ``query`` loads the tables a query names from one listing and runs it in an in-memory DuckDB;
``partition_rows`` reads one partition from its own file (a per-shard check, at any number of shards). The CLI,
on the machine a person works on, compacts the rows and writes the DuckDB file at ``path``, which holds views
only (``duckdb -readonly data/warehouse.duckdb``): never stale, never written by a step.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl
from dagster import ConfigurableResource
from filelock import FileLock

from caption_assets.warehouse_rows import (
    Table, compact, ensure_schema_files, file_count, key_rows, load_table, sql_frame, view_sql, write_rows,
)

S, F, I, T = pl.String(), pl.Float64(), pl.Int64(), pl.Datetime("us")
TABLES: dict[str, Table] = {t.name: t for t in (
    Table("funnel", ("stage", "partition"), {"partition": S, "stage": S, "outcome": S, "reason": S, "count": I, "run_id": S, "updated_at": T}),
    Table("stats", ("stage", "partition"), {"partition": S, "stage": S, "name": S, "value": F, "run_id": S}),
    Table("versions", ("stage", "partition"), {"partition": S, "stage": S, "name": S, "version": S, "run_id": S}),
    Table("quarantine", ("stage", "partition"), {"partition": S, "stage": S, "key": S, "member": S, "reason": S, "message": S, "run_id": S}),
    Table("comparison", (), {"metric": S, "before": F, "after": F, "run_id": S}),
    Table("evaluation", ("run_id",), {"training_set": S, "metric": S, "mean": F, "sd": F, "n_pairs": I, "samples_seen": I, "seeds": S,
                                      "run_id": S, "recipe": S, "created_at": T, "ci_lo": F, "ci_hi": F}),
    Table("evaluation_differences", ("run_id",), {"candidate": S, "baseline": S, "metric": S, "diff": F, "ci_lo": F, "ci_hi": F, "level": F,
                                                  "n_seeds": I, "n_queries": I, "run_id": S, "created_at": T}),
    Table("stage_truth", ("run_id",), {"stage": S, "metric": S, "value": F, "n": I, "run_id": S, "created_at": T}),
)}
VIEWS_VERSION = 1  # bump when view_sql changes, so the CLI rewrites the views of existing files


def rows_dir_for(path: str | Path) -> Path:
    """Where a warehouse file's rows live: ``data/warehouse.duckdb`` -> ``data/warehouse/``."""
    path = Path(path)
    return path.with_suffix("") if path.suffix else path.with_name(path.name + "_rows")


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class QualityWarehouse(ConfigurableResource):
    """``path``: the DuckDB file of views a person opens; the rows live beside it (``rows_dir_for``), on the
    same shared path as the lake when the steps run on several machines."""

    path: str

    @property
    def rows(self) -> Path:
        return rows_dir_for(self.path)

    def _write(self, name: str, keys: Mapping[str, str], df: pl.DataFrame) -> None:
        write_rows(self.rows, TABLES[name], keys, df)  # only the compactor writes a table's shared files (_compacted, schema)

    def replace_partition(
        self,
        stage: str,
        partition: str,
        funnel: Sequence[tuple[str, str | None, int]],
        quarantine_parquet: Path | None = None,
        run_id: str | None = None,
        stats: Sequence[tuple[str, float]] = (),
        versions: Mapping[str, str] | None = None,
    ) -> None:
        """Swap in this partition's funnel rows, named figures, input versions and quarantine rows (read from the
        stage's quarantine parquet); the funnel file goes last, so a check that sees the new funnel sees the rest."""
        keys = {"stage": stage, "partition": partition}
        quarantine = pl.DataFrame()
        if quarantine_parquet is not None:
            quarantine = pl.read_parquet(quarantine_parquet)
        self._write("quarantine", keys, quarantine.with_columns(run_id=pl.lit(run_id, dtype=pl.String)))
        self._write("stats", keys, pl.DataFrame({"name": [n for n, _ in stats], "value": [float(v) for _, v in stats]},
                                                schema={"name": pl.String, "value": pl.Float64}).with_columns(run_id=pl.lit(run_id, dtype=pl.String)))
        self._write("versions", keys, pl.DataFrame({"name": list((versions or {}).keys()), "version": list((versions or {}).values())},
                                                   schema={"name": pl.String, "version": pl.String}).with_columns(run_id=pl.lit(run_id, dtype=pl.String)))
        self._write("funnel", keys, pl.DataFrame(
            [(o, r, int(c)) for o, r, c in funnel], schema={"outcome": pl.String, "reason": pl.String, "count": pl.Int64}, orient="row",
        ).with_columns(run_id=pl.lit(run_id, dtype=pl.String), updated_at=pl.lit(now())))

    def replace_comparison(self, comparison: pl.DataFrame, run_id: str | None = None) -> None:
        """The before/after table of the latest compressed dataset (one row per metric)."""
        self._write("comparison", {}, comparison.with_columns(run_id=pl.lit(run_id, dtype=pl.String)))

    def add_evaluation(self, evaluation: pl.DataFrame, stage_truth: pl.DataFrame | None, run_id: str, recipe: str,
                       differences: pl.DataFrame | None = None) -> None:
        """Append one curation_eval run (history is kept: compare runs by ``run_id`` / ``created_at``): each set's
        figures with their intervals, the paired differences between sets, the stage truth."""
        keys, created = {"run_id": run_id}, pl.lit(now())
        if stage_truth is not None:
            self._write("stage_truth", keys, stage_truth.with_columns(created_at=created))
        if differences is not None and not differences.is_empty():
            self._write("evaluation_differences", keys, differences.with_columns(created_at=created))
        self._write("evaluation", keys, evaluation.with_columns(recipe=pl.lit(recipe), created_at=created))

    def latest_evaluation(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The most recent curation_eval run: its ``evaluation`` rows and its own ``stage_truth`` rows (empty if it had none)."""
        ev = self.query("SELECT * FROM evaluation WHERE run_id = (SELECT arg_max(run_id, created_at) FROM evaluation)")
        if ev.is_empty():
            return ev, pl.DataFrame()
        return ev, self.query("SELECT * FROM stage_truth WHERE run_id = ?", [ev["run_id"][0]])

    def latest_differences(self) -> pl.DataFrame:
        """The paired differences (with intervals) of the most recent curation_eval run; empty for a run recorded before them."""
        return self.query("SELECT * EXCLUDE (created_at) FROM evaluation_differences WHERE run_id = "
                          "(SELECT arg_max(run_id, created_at) FROM evaluation) ORDER BY baseline, metric")

    def partition_rows(self, name: str, stage: str, partition: str) -> pl.DataFrame:
        """One partition's rows of a per-partition table from its own file (or the compacted one): no listing, so
        O(1) at any number of shards; what a per-shard check reads."""
        return key_rows(self.rows, TABLES[name], {"stage": stage, "partition": partition})

    @contextmanager
    def connect(self, names: Sequence[str] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory DuckDB holding the current rows of these tables (default: all); reads only, from any
        machine, with no lock."""
        con = duckdb.connect(":memory:")
        try:
            for name in names if names is not None else TABLES:
                con.register(name, load_table(self.rows, TABLES[name]).to_arrow())
            yield con
        finally:
            con.close()

    def query(self, sql: str, params: Sequence[object] | None = None) -> pl.DataFrame:
        """Run a read-only query; only the tables the SQL names are loaded."""
        with self.connect([n for n in TABLES if re.search(rf"\b{n}\b", sql)]) as con:
            return sql_frame(con, sql, list(params) if params else None)

    def funnel(self, stage: str | None = None) -> pl.DataFrame:
        where = "WHERE stage = ?" if stage else ""
        return self.query(
            f"SELECT partition, stage, outcome, reason, count FROM funnel {where} ORDER BY partition, stage, outcome, reason NULLS FIRST",
            [stage] if stage else None,
        )

    def file_count(self) -> int:
        """Row files not yet compacted, over every table: what a full-table read opens besides the compacted files."""
        return sum(file_count(self.rows, t) for t in TABLES.values())

    def publish(self, timeout_s: float = 60.0) -> Path:
        """Compact the rows, then write the views into the DuckDB file at ``path`` for people and BI tools. Called
        by the CLI on one machine, never by a step (the file lock below serialises CLI processes on that machine
        only, which is all it needs to). A file from before the rows moved to parquet (tables, not views) is kept
        aside as ``*.tables-<time>.duckdb``."""
        db = Path(self.path)
        db.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(db) + ".lock", timeout=timeout_s):
            for table in TABLES.values():
                ensure_schema_files(self.rows, table)
                compact(self.rows, table)
            layout = f"{self.rows.resolve().as_posix()}|{VIEWS_VERSION}"  # the views' SQL depends on nothing else
            if db.exists():
                con = duckdb.connect(str(db), read_only=True)
                try:
                    tables = con.execute("SELECT count(*) FROM duckdb_tables() WHERE NOT temporary").fetchone()[0]
                    marked = con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = '_layout'").fetchone()[0]
                    current = marked and con.execute("SELECT layout FROM _layout").fetchone()[0] == layout
                finally:
                    con.close()
                if tables:
                    db.rename(db.with_name(f"{db.stem}.tables-{time.strftime('%Y%m%d-%H%M%S')}.duckdb"))
                elif current:
                    return db  # the views are already these: no write, so a reader holding the file open never blocks us
            con = duckdb.connect(str(db))
            try:
                for name, table in TABLES.items():  # every table has its schema files by now: each view binds
                    con.execute(f"CREATE OR REPLACE VIEW {name} AS {view_sql(self.rows, table)}")
                con.execute(f"CREATE OR REPLACE VIEW _layout AS SELECT '{layout}' AS layout")
            finally:
                con.close()
        return db
