"""Small helpers that turn polars frames into Dagster UI metadata."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl
from dagster import MetadataValue, TableColumn, TableSchema

_DTYPE_NAMES = {pl.String: "string", pl.Int64: "int64", pl.Int32: "int32", pl.Float32: "float32", pl.Float64: "float64", pl.Boolean: "bool"}


def md_table(df: pl.DataFrame, float_fmt: str = "{:.3f}") -> MetadataValue:
    """A frame as a markdown table (what the UI renders best for small summaries)."""
    if df.is_empty():
        return MetadataValue.md("_none_")
    header = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    rows = []
    for row in df.iter_rows():
        cells = [float_fmt.format(v) if isinstance(v, float) else ("" if v is None else str(v)) for v in row]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return MetadataValue.md(header + "\n".join(rows))


def describe(df: pl.DataFrame, columns: Mapping[str, str]) -> pl.DataFrame:
    """min / p5 / median / mean / p95 / max of numeric columns, one row per column (label -> column)."""
    if df.is_empty():
        return pl.DataFrame()
    stats = [
        df.select(
            pl.lit(label).alias("measure"),
            pl.col(col).min().cast(pl.Float64).alias("min"),
            pl.col(col).quantile(0.05).cast(pl.Float64).alias("p5"),
            pl.col(col).median().cast(pl.Float64).alias("median"),
            pl.col(col).mean().cast(pl.Float64).alias("mean"),
            pl.col(col).quantile(0.95).cast(pl.Float64).alias("p95"),
            pl.col(col).max().cast(pl.Float64).alias("max"),
        )
        for label, col in columns.items()
    ]
    return pl.concat(stats)


def counts_by(df: pl.DataFrame, column: str, name: str = "count") -> pl.DataFrame:
    if df.is_empty():
        return pl.DataFrame({column: [], name: []})
    return df.group_by(column).agg(pl.len().alias(name)).sort([name, column], descending=[True, False])


def table_schema(schema: Mapping[str, pl.DataType], descriptions: Mapping[str, str] | None = None) -> TableSchema:
    descriptions = descriptions or {}
    return TableSchema(
        columns=[
            TableColumn(name, _DTYPE_NAMES.get(dtype, str(dtype)), description=descriptions.get(name))  # type: ignore[arg-type]
            for name, dtype in schema.items()
        ]
    )


def md_histogram(values, bins: int = 12, label: str = "score") -> MetadataValue:
    """A histogram as a markdown table with bars, readable in the UI without a plotting backend."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return MetadataValue.md("_no values_")
    counts, edges = np.histogram(values, bins=bins)
    peak = max(int(counts.max()), 1)
    lines = [f"| {label} | count | |", "|---|---:|---|"]
    for c, lo, hi in zip(counts, edges[:-1], edges[1:]):
        lines.append(f"| {lo:.3f} – {hi:.3f} | {int(c)} | {'█' * max(1 if c else 0, round(24 * int(c) / peak))} |")
    return MetadataValue.md("\n".join(lines))


def preview(df: pl.DataFrame, by: str, columns: list[str], per_group: int = 2, width: int = 70) -> MetadataValue:
    """A few rows per value of ``by`` (first keys in order), long text cut to ``width``: what a person opens
    a partition to look at (dropped pairs with their reasons, rejected fusions with the guardrail that fired)."""
    if df.is_empty():
        return MetadataValue.md("_none_")
    rows = df.sort(by, "key", nulls_last=True).group_by(by, maintain_order=True).head(per_group).select(by, *[c for c in columns if c != by])
    cut = [(pl.col(c).list.join(" | ") if t == pl.List(pl.String) else pl.col(c)).str.slice(0, width * (3 if t == pl.List(pl.String) else 1))
           for c, t in rows.schema.items() if t in (pl.String, pl.List(pl.String))]
    cut += [pl.col(c).list.eval(pl.element().cast(pl.Float64).round(3)) for c, t in rows.schema.items() if t in (pl.List(pl.Float32), pl.List(pl.Float64))]
    return md_table(rows.with_columns(cut) if cut else rows)
