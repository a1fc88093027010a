"""The DuckDB quality warehouse: funnel and quarantine tables, fed after each materialization.

DuckDB lets one process write a database file at a time, so every connection (reader or writer) is
taken under a file lock and held only for one short transaction. A partition's rows for a stage are
replaced in one transaction, so re-running a partition never duplicates rows and readers never see
a half-replaced partition.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl
from dagster import ConfigurableResource
from filelock import FileLock

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS funnel (
    partition VARCHAR NOT NULL, stage VARCHAR NOT NULL, outcome VARCHAR NOT NULL,
    reason VARCHAR, count BIGINT NOT NULL, run_id VARCHAR, updated_at TIMESTAMP DEFAULT now()
);
CREATE TABLE IF NOT EXISTS stats (
    partition VARCHAR NOT NULL, stage VARCHAR NOT NULL, name VARCHAR NOT NULL, value DOUBLE, run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS versions (
    partition VARCHAR NOT NULL, stage VARCHAR NOT NULL, name VARCHAR NOT NULL, version VARCHAR, run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS comparison (
    metric VARCHAR NOT NULL, before DOUBLE, after DOUBLE, run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS evaluation (
    training_set VARCHAR NOT NULL, metric VARCHAR NOT NULL, mean DOUBLE, sd DOUBLE, n_pairs BIGINT,
    samples_seen BIGINT, seeds VARCHAR, run_id VARCHAR, recipe VARCHAR, created_at TIMESTAMP DEFAULT now()
);
ALTER TABLE evaluation ADD COLUMN IF NOT EXISTS ci_lo DOUBLE;
ALTER TABLE evaluation ADD COLUMN IF NOT EXISTS ci_hi DOUBLE;
CREATE TABLE IF NOT EXISTS evaluation_differences (
    candidate VARCHAR NOT NULL, baseline VARCHAR NOT NULL, metric VARCHAR NOT NULL, diff DOUBLE, ci_lo DOUBLE, ci_hi DOUBLE,
    level DOUBLE, n_seeds BIGINT, n_queries BIGINT, run_id VARCHAR, created_at TIMESTAMP DEFAULT now()
);
CREATE TABLE IF NOT EXISTS stage_truth (
    stage VARCHAR NOT NULL, metric VARCHAR NOT NULL, value DOUBLE, n BIGINT, run_id VARCHAR, created_at TIMESTAMP DEFAULT now()
);
CREATE TABLE IF NOT EXISTS quarantine (
    partition VARCHAR NOT NULL, stage VARCHAR NOT NULL, key VARCHAR, member VARCHAR,
    reason VARCHAR NOT NULL, message VARCHAR, run_id VARCHAR
);
"""

FUNNEL_COLUMNS = ("outcome", "reason", "count")


class QualityWarehouse(ConfigurableResource):
    """Path of the DuckDB file; created on first write."""

    path: str
    lock_timeout_s: float = 300.0

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        db = Path(self.path)
        db.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(db) + ".lock", timeout=self.lock_timeout_s):
            if read_only and not db.exists():
                con = duckdb.connect(":memory:")  # nothing written yet: empty tables, same shape
                con.execute(SCHEMA_SQL)
            else:
                con = duckdb.connect(str(db), read_only=read_only)
                if not read_only:
                    con.execute(SCHEMA_SQL)
            try:
                yield con
            finally:
                con.close()

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
        """Swap in this partition's funnel rows, named figures, input versions and quarantine rows (read straight from parquet)."""
        funnel_df = pl.DataFrame(
            [(partition, stage, o, r, int(c), run_id) for o, r, c in funnel],
            schema={"partition": pl.String, "stage": pl.String, "outcome": pl.String, "reason": pl.String, "count": pl.Int64, "run_id": pl.String},
            orient="row",
        )
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            con.execute("DELETE FROM funnel WHERE partition = ? AND stage = ?", [partition, stage])
            con.execute("DELETE FROM quarantine WHERE partition = ? AND stage = ?", [partition, stage])
            con.execute("DELETE FROM stats WHERE partition = ? AND stage = ?", [partition, stage])
            con.execute("DELETE FROM versions WHERE partition = ? AND stage = ?", [partition, stage])
            if versions:
                con.executemany("INSERT INTO versions VALUES (?, ?, ?, ?, ?)", [(partition, stage, n, v, run_id) for n, v in versions.items()])
            if stats:
                con.executemany("INSERT INTO stats VALUES (?, ?, ?, ?, ?)", [(partition, stage, n, float(v), run_id) for n, v in stats])
            con.register("funnel_df", funnel_df.to_arrow())
            con.execute("INSERT INTO funnel (partition, stage, outcome, reason, count, run_id) SELECT * FROM funnel_df")
            if quarantine_parquet is not None:
                con.execute(
                    "INSERT INTO quarantine SELECT ?, stage, key, member, reason, message, ? FROM read_parquet(?)",
                    [partition, run_id, str(quarantine_parquet)],
                )
            con.execute("COMMIT")

    def replace_comparison(self, comparison: pl.DataFrame, run_id: str | None = None) -> None:
        """The before/after table of the latest compressed dataset (one row per metric)."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            con.execute("DELETE FROM comparison")
            con.register("cmp", comparison.with_columns(run_id=pl.lit(run_id, dtype=pl.String)).to_arrow())
            con.execute("INSERT INTO comparison SELECT metric, before, after, run_id FROM cmp")
            con.execute("COMMIT")

    def add_evaluation(self, evaluation: pl.DataFrame, stage_truth: pl.DataFrame | None, run_id: str, recipe: str,
                       differences: pl.DataFrame | None = None) -> None:
        """Append one curation_eval run (history is kept: compare runs by ``run_id`` / ``created_at``): each set's
        figures with their intervals, the paired differences between sets, the stage truth."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            con.register("ev", evaluation.with_columns(run_id=pl.lit(run_id), recipe=pl.lit(recipe)).to_arrow())
            con.execute("INSERT INTO evaluation (training_set, metric, mean, sd, n_pairs, samples_seen, seeds, run_id, recipe, ci_lo, ci_hi) "
                        "SELECT training_set, metric, mean, sd, n_pairs, samples_seen, seeds, run_id, recipe, ci_lo, ci_hi FROM ev")
            if differences is not None and not differences.is_empty():
                con.register("diffs", differences.with_columns(run_id=pl.lit(run_id)).to_arrow())
                con.execute("INSERT INTO evaluation_differences (candidate, baseline, metric, diff, ci_lo, ci_hi, level, n_seeds, n_queries, run_id) "
                            "SELECT candidate, baseline, metric, diff, ci_lo, ci_hi, level, n_seeds, n_queries, run_id FROM diffs")
            if stage_truth is not None:
                con.register("st", stage_truth.with_columns(run_id=pl.lit(run_id)).to_arrow())
                con.execute("INSERT INTO stage_truth (stage, metric, value, n, run_id) SELECT stage, metric, value, n, run_id FROM st")
            con.execute("COMMIT")

    def latest_evaluation(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The most recent curation_eval run: its ``evaluation`` rows and its own ``stage_truth`` rows (empty if it had none)."""
        try:
            ev = self.query("SELECT * FROM evaluation WHERE run_id = (SELECT arg_max(run_id, created_at) FROM evaluation)")
            if ev.is_empty():
                return ev, pl.DataFrame()
            return ev, self.query("SELECT * FROM stage_truth WHERE run_id = ?", [ev["run_id"][0]])
        except duckdb.CatalogException:  # a warehouse written before these tables existed
            return pl.DataFrame(), pl.DataFrame()

    def latest_differences(self) -> pl.DataFrame:
        """The paired differences (with intervals) of the most recent curation_eval run; empty for a run recorded before them."""
        try:
            return self.query("SELECT * EXCLUDE (created_at) FROM evaluation_differences WHERE run_id = "
                              "(SELECT arg_max(run_id, created_at) FROM evaluation) ORDER BY baseline, metric")
        except duckdb.CatalogException:  # a warehouse written before the table existed
            return pl.DataFrame()

    def query(self, sql: str, params: Sequence[object] | None = None) -> pl.DataFrame:
        with self.connect(read_only=True) as con:
            rel = con.sql(sql, params=list(params) if params else None)
            to_arrow = getattr(rel, "to_arrow_table", None) or rel.arrow  # duckdb 2.x / 1.x
            return pl.from_arrow(to_arrow())  # type: ignore[return-value]

    def funnel(self, stage: str | None = None) -> pl.DataFrame:
        where = "WHERE stage = ?" if stage else ""
        return self.query(
            f"SELECT partition, stage, outcome, reason, count FROM funnel {where} ORDER BY partition, stage, outcome, reason NULLS FIRST",
            [stage] if stage else None,
        )
