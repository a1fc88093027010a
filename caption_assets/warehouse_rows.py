"""The warehouse's rows as parquet files, written from any machine with no lock, and compacted from one.

Layout, per table with keys (hive, keys URL-encoded the way DuckDB writes them)::

    <rows>/funnel/stage=<stage>/partition=<partition>/<write id>.parquet   one file per write of a key
    <rows>/funnel/_compacted.parquet                                       every key compacted so far (+ ``_dir``)

A write is one new file named by its write id (nanosecond time + random suffix), written to a temporary name
and renamed into place; the key's files written more than five minutes earlier are then removed (a key
rewritten within minutes keeps its last files until compaction). Readers take, for every key directory, its
newest file (an empty file is a key emptied on purpose), and the compacted rows of every key that has no file
of its own. Compaction (one process at a time, on one machine) folds the newest file of every key into
``_compacted.parquet``, replaces it by rename, and only then removes exactly the files it folded: a write that
lands meanwhile has a newer name, is not removed, and wins over the compacted rows. A reader whose listing
names a file removed since lists again (``load_table``), so it never sees a key twice or not at all; no writer
waits for anyone.

Write ids order writes of the same key by the writers' clocks: keep clocks in sync (NTP), as the same key is
written again only by a later run.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import duckdb
import polars as pl

from caption_assets.atomic_io import atomic_write_parquet

SCHEMA_KEY = "__schema__"  # a zero-row key per table: the views bind before any step wrote a row
COMPACTED = "_compacted.parquet"
KEY_DIR = "_dir"  # the compacted rows' key directory, relative to the table's folder
SUPERSEDED_GRACE_S = 300.0  # a writer removes its key's older files only once they are this old (so rapid rewrites never starve a reader)


@dataclass(frozen=True)
class Table:
    """One warehouse table: the hive keys its files are laid out by, and every column in view order."""

    name: str
    keys: tuple[str, ...]
    columns: dict[str, pl.DataType]

    @property
    def file_columns(self) -> dict[str, pl.DataType]:
        return {c: t for c, t in self.columns.items() if c not in self.keys}


def key_dir(rows: Path, table: Table, keys: Mapping[str, str]) -> Path:
    folder = rows / table.name
    for k in table.keys:
        folder = folder / f"{k}={quote(str(keys[k]), safe='')}"
    return folder


def conform(df: pl.DataFrame, columns: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """These columns in this order and type; a column the input lacks is null (rows of every shape)."""
    return df.select([pl.col(c).cast(t) if c in df.columns else pl.lit(None, dtype=t).alias(c) for c, t in columns.items()])


def new_write_id() -> str:
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def _files(folder: Path) -> list[Path]:
    """A key folder's row files, oldest first (temporary files, named ``.*.tmp``, left out)."""
    return sorted(Path(e.path) for e in os.scandir(folder) if e.name.endswith(".parquet")) if folder.is_dir() else []


def _retry(read, attempts: int = 5, errors: tuple[type[BaseException], ...] = (FileNotFoundError,)):
    """``read()`` again when a file it listed was removed meanwhile (folded by a compaction, or superseded)."""
    for attempt in range(attempts):
        try:
            return read()
        except errors:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def write_rows(rows: Path, table: Table, keys: Mapping[str, str], df: pl.DataFrame) -> Path:
    """Replace the rows of one key (no rows: the key reads empty). Without keys the table is one file."""
    data = conform(df, table.file_columns)
    if not table.keys:
        return atomic_write_parquet(data, rows / table.name / "data.parquet")
    folder = key_dir(rows, table, keys)
    target = folder / f"{new_write_id()}.parquet"
    if data.is_empty() and not _has_rows(rows, table, folder):
        return target  # nothing to empty: no file (most partitions have no stats or versions of a stage)
    for attempt in range(5):  # a compaction may remove the emptied folder between our mkdir and rename
        try:
            atomic_write_parquet(data, target)
            break
        except FileNotFoundError:
            if attempt == 4:
                raise
    cutoff = f"{time.time_ns() - int(SUPERSEDED_GRACE_S * 1e9):020d}"
    for old in _files(folder):
        if old.name < cutoff:  # written long enough ago; ours is newer
            old.unlink(missing_ok=True)
    return target


def _has_rows(rows: Path, table: Table, folder: Path) -> bool:
    if _files(folder):
        return True
    compacted = rows / table.name / COMPACTED
    rel = folder.relative_to(rows / table.name).as_posix()
    return compacted.exists() and pl.scan_parquet(compacted).filter(pl.col(KEY_DIR) == rel).select(pl.len()).collect().item() > 0


def _create_if_missing(df: pl.DataFrame, target: Path) -> None:
    """Write ``target`` only if nothing is there, atomically (a hard link fails on an existing name): a seed
    never overwrites rows a step wrote a moment earlier."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    df.write_parquet(tmp)
    try:
        os.link(tmp, target)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def schema_dir(table: Table) -> str:
    return "/".join(f"{k}={SCHEMA_KEY}" for k in table.keys)


def ensure_schema_files(rows: Path, table: Table) -> None:
    """The zero-row files that give a table's views their columns before any row exists."""
    if not table.keys:
        _create_if_missing(pl.DataFrame(schema=table.file_columns), rows / table.name / "data.parquet")
        return
    _create_if_missing(pl.DataFrame(schema=table.file_columns), rows / table.name / schema_dir(table) / "0.parquet")
    _create_if_missing(pl.DataFrame(schema={**table.columns, KEY_DIR: pl.String()}), rows / table.name / COMPACTED)


def _glob(rows: Path, table: Table) -> str:
    return (rows / table.name).as_posix() + "/" + "/".join(["*"] * len(table.keys) + ["*.parquet"])


def view_sql(rows: Path, table: Table) -> str:
    """The newest file of every key directory, then the compacted rows of every key without one."""
    cols = ", ".join(f'"{c}"' for c in table.columns)
    if not table.keys:
        return f"SELECT {cols} FROM read_parquet('{_glob(rows, table)}')"
    glob, prefix = _glob(rows, table), (rows / table.name).as_posix() + "/"
    return (
        f"WITH newest AS (SELECT parse_dirpath(file) AS dir, max(file) AS file FROM glob('{glob}') GROUP BY ALL) "
        f"SELECT {cols} FROM read_parquet('{glob}', hive_partitioning = true, hive_types_autocast = false, filename = true) "
        f"WHERE filename IN (SELECT file FROM newest) "
        f"UNION ALL SELECT {cols} FROM read_parquet('{prefix}{COMPACTED}') "
        f"WHERE {KEY_DIR} NOT IN (SELECT substr(dir, {len(prefix) + 1}) FROM newest)"
    )


def key_rows(rows: Path, table: Table, keys: Mapping[str, str]) -> pl.DataFrame:
    """One key's rows from its newest file, else from the compacted file: no listing of the table."""
    folder = key_dir(rows, table, keys)
    compacted = rows / table.name / COMPACTED
    rel = folder.relative_to(rows / table.name).as_posix()

    def read() -> pl.DataFrame:
        files = _files(folder)
        if files:
            df = conform(pl.read_parquet(files[-1]), table.file_columns)
            return df.with_columns(**{k: pl.lit(keys[k], dtype=pl.String) for k in table.keys}).select(list(table.columns))
        if not compacted.exists():
            return pl.DataFrame(schema=table.columns)
        return conform(pl.scan_parquet(compacted).filter(pl.col(KEY_DIR) == rel).collect(), table.columns)

    return _retry(read)


def key_files(rows: Path, table: Table) -> dict[str, list[Path]]:
    """Key directory (relative) -> its files, oldest first; the schema key left out."""
    out: dict[str, list[Path]] = {}
    if not table.keys:
        return out
    base = rows / table.name
    level = [base]
    for _ in table.keys:
        level = [Path(e.path) for d in level if d.is_dir() for e in os.scandir(d) if e.is_dir() and "=" in e.name]
    for d in level:
        rel = d.relative_to(base).as_posix()
        if rel == schema_dir(table):
            continue
        files = _files(d)
        if files:
            out[rel] = files
    return out


def _read_keys(files: list[str], table: Table, base: Path) -> pl.DataFrame:
    """These key files' rows with their hive keys (URL-decoded) and their key directory."""
    if not files:
        return pl.DataFrame(schema={**table.columns, KEY_DIR: pl.String()})
    cols = ", ".join(f'"{c}"' for c in table.columns)
    con = duckdb.connect(":memory:")
    try:
        df = sql_frame(con, f"SELECT {cols}, substr(parse_dirpath(filename), {len(base.as_posix()) + 2}) AS {KEY_DIR} "
                            f"FROM read_parquet(?, hive_partitioning = true, hive_types_autocast = false, filename = true)", [files])
    finally:
        con.close()
    return conform(df, {**table.columns, KEY_DIR: pl.String()})


def sql_frame(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> pl.DataFrame:
    """A query's result as polars (DuckDB 2.x relations, or 1.x)."""
    rel = con.sql(sql, params=params or None)
    to_arrow = getattr(rel, "to_arrow_table", None) or rel.arrow
    return pl.from_arrow(to_arrow())  # type: ignore[return-value]


def _current(rows: Path, table: Table) -> tuple[dict[str, list[Path]], pl.DataFrame]:
    """From one listing: the key files, and every current row with its key folder (each listed key's newest file,
    then the compacted rows of the keys with no file)."""
    base = rows / table.name
    listed = key_files(rows, table)
    fresh = _read_keys([files[-1].as_posix() for files in listed.values()], table, base)
    compacted = conform(_read_open(base / COMPACTED), fresh.schema) if (base / COMPACTED).exists() else fresh.clear()
    return listed, pl.concat([compacted.filter(~pl.col(KEY_DIR).is_in(list(listed))), fresh])


def _read_open(path: Path) -> pl.DataFrame:
    """Read a file a compaction may replace (by rename) meanwhile from one open handle: reading by path may open it
    twice, the footer of one version and the pages of the next ("Invalid thrift" under load)."""
    with path.open("rb") as f:
        return pl.read_parquet(f)


def load_table(rows: Path, table: Table) -> pl.DataFrame:
    """Every current row of a table. A file a concurrent compaction removed after the listing means the compacted
    file already holds it: list again."""
    if not table.keys:
        path = rows / table.name / "data.parquet"
        return conform(_read_open(path), table.columns) if path.exists() else pl.DataFrame(schema=table.columns)
    return _retry(lambda: _current(rows, table)[1], errors=(FileNotFoundError, duckdb.IOException)).drop(KEY_DIR)


def compact(rows: Path, table: Table) -> int:
    """Fold every key's newest file into ``_compacted.parquet``; returns the files removed. Run by one process at a time."""
    if not table.keys:
        return 0
    listed, merged = _current(rows, table)
    if not listed:
        return 0
    base = rows / table.name
    atomic_write_parquet(merged.sort(KEY_DIR, maintain_order=True), base / COMPACTED)
    removed = 0
    for rel, files in listed.items():
        for f in files:
            f.unlink(missing_ok=True)
            removed += 1
        for d in [base / rel, *(base / rel).parents]:
            if d == base:
                break
            try:
                d.rmdir()
            except OSError:  # not empty: a newer write landed, or other keys below
                break
    return removed


def file_count(rows: Path, table: Table) -> int:
    return sum(len(f) for f in key_files(rows, table).values())
