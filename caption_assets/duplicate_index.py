"""A global index of image hashes across shards: exact (sha256) and near (pHash) duplicates.

Each ``raw_pairs`` run adds its shard's hashes and asks, in the same transaction, which of its images
were seen earlier. "Earlier" is a stable order, ``(shard key, row in shard)``, not arrival time: the
first occurrence in that order is the original and every later one is its duplicate, whichever run
finishes first. When a shard that sorts earlier arrives after a later one, the later shard's verdicts
change; the index bumps that shard's *epoch* and lists it as stale until it is ingested again (the
crawl sensor and the nightly backfill re-run it). So after every stale shard has re-run, the flags
are the same as a sequential ingest in shard order.

SQLite with B-tree keys on ``(sha256, …)`` and ``(band, value, …)``: a lookup is one index probe per
hash, so its cost grows with log(index size), not with the number of shards. (DuckDB's hash joins
would scan the whole table on every lookup.) Near duplicates use multi-index hashing: the 64-bit
pHash is cut into ``max_distance + 1`` bands; two hashes within ``max_distance`` bits of each other
agree exactly on at least one band (pigeonhole), so band equality finds every candidate.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    sha256 TEXT NOT NULL, shard TEXT NOT NULL, ord INTEGER NOT NULL, uid TEXT NOT NULL, phash INTEGER NOT NULL,
    PRIMARY KEY (sha256, shard, ord)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS images_by_shard ON images (shard);
CREATE TABLE IF NOT EXISTS bands (
    band INTEGER NOT NULL, value INTEGER NOT NULL, shard TEXT NOT NULL, ord INTEGER NOT NULL, uid TEXT NOT NULL,
    sha256 TEXT NOT NULL, phash INTEGER NOT NULL,
    PRIMARY KEY (band, value, shard, ord)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bands_by_shard ON bands (shard);
CREATE TABLE IF NOT EXISTS shards (shard TEXT PRIMARY KEY, epoch INTEGER NOT NULL, used_epoch INTEGER NOT NULL, content TEXT);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

VERDICT_SCHEMA = {"ord": pl.Int64, "duplicate_of": pl.String, "duplicate_kind": pl.String, "phash_distance": pl.Int64}


def band_widths(n_bands: int) -> list[int]:
    return [64 // n_bands + (1 if i < 64 % n_bands else 0) for i in range(n_bands)]


def band_values(phash: np.ndarray, n_bands: int) -> np.ndarray:
    """(rows, n_bands) int64: the pHash's bits cut into ``n_bands`` contiguous bands."""
    bits = phash.astype(np.int64).view(np.uint64)
    out, shift = np.empty((len(bits), n_bands), dtype=np.int64), 0
    for b, width in enumerate(band_widths(n_bands)):
        out[:, b] = ((bits >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
        shift += width
    return out


@dataclass(frozen=True)
class Update:
    """What ingesting one shard learned: a verdict per row, and later shards whose verdicts it changed."""

    verdicts: pl.DataFrame  # ord, duplicate_of (uid of the first occurrence), duplicate_kind exact|near, phash_distance
    epoch: int  # the index state this shard's verdicts were computed against
    restaled: list[str]


class ImageIndex:
    """One SQLite file, safe for several processes (WAL, writers serialised by ``BEGIN IMMEDIATE``)."""

    def __init__(self, path: Path | str, max_distance: int = 4, timeout_s: float = 300.0):
        self.path = Path(path)
        self.max_distance = max_distance
        self.n_bands = max_distance + 1
        self.timeout_s = timeout_s

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript(SCHEMA)
            stored = con.execute("SELECT value FROM settings WHERE name = 'max_distance'").fetchone()
            if stored is None:
                con.execute("INSERT OR IGNORE INTO settings VALUES ('max_distance', ?)", (str(self.max_distance),))
            elif int(stored[0]) != self.max_distance:
                raise ValueError(f"{self.path} was built with max_distance={stored[0]}, not {self.max_distance}: rebuild it (delete the file and re-ingest)")
            yield con
        finally:
            con.close()

    def update(self, shard: str, rows: pl.DataFrame) -> Update:
        """Replace ``shard``'s rows (``uid``, ``sha256``, ``phash`` in shard order) and return their verdicts."""
        rows = rows.select("uid", "sha256", "phash").with_row_index("ord").with_columns(pl.col("ord").cast(pl.Int64))
        bands = band_values(rows["phash"].to_numpy(), self.n_bands)
        content = _fingerprint(rows)
        with self.connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                prior = con.execute("SELECT epoch, content FROM shards WHERE shard = ?", (shard,)).fetchone()
                epoch = prior[0] if prior else 0
                con.execute("DELETE FROM images WHERE shard = ?", (shard,))
                con.execute("DELETE FROM bands WHERE shard = ?", (shard,))
                records = list(zip(rows["sha256"], [shard] * rows.height, rows["ord"], rows["uid"], rows["phash"]))
                con.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?)", records)
                con.executemany(
                    "INSERT INTO bands VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(b, int(bands[i, b]), shard, o, u, s, p) for i, (s, _, o, u, p) in enumerate(records) for b in range(self.n_bands)],
                )
                _load_query(con, rows, bands)
                verdicts = self._verdicts(con, shard, rows)
                restaled = [] if prior is not None and prior[1] == content else self._later_matches(con, shard)
                if restaled:
                    con.executemany("UPDATE shards SET epoch = epoch + 1 WHERE shard = ?", [(s,) for s in restaled])
                con.execute(
                    "INSERT INTO shards VALUES (?, ?, ?, ?) ON CONFLICT (shard) DO UPDATE SET used_epoch = excluded.used_epoch, content = excluded.content",
                    (shard, epoch, epoch, content),
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return Update(verdicts, epoch, restaled)

    def _verdicts(self, con: sqlite3.Connection, shard: str, rows: pl.DataFrame) -> pl.DataFrame:
        """Each row's first earlier occurrence: an identical image if any, else the nearest-in-order near one."""
        earlier = "(i.shard < :s OR (i.shard = :s AND i.ord < q.ord))"
        exact = _frame(con.execute(
            f"SELECT q.ord, i.shard, i.ord, i.uid FROM q JOIN images i ON i.sha256 = q.sha256 WHERE {earlier}", {"s": shard}
        ), ["ord", "shard", "o", "uid"]).with_columns(kind=pl.lit("exact"), distance=pl.lit(0, pl.Int64))
        near = (
            _frame(con.execute(
                f"SELECT DISTINCT q.ord, i.shard, i.ord, i.uid, q.phash, i.phash FROM qb q JOIN bands i ON i.band = q.band AND i.value = q.value "
                f"WHERE {earlier} AND i.sha256 != q.sha256", {"s": shard}
            ), ["ord", "shard", "o", "uid", "p", "p2"])
            .with_columns(distance=(pl.col("p").xor(pl.col("p2"))).bitwise_count_ones().cast(pl.Int64))
            .filter(pl.col("distance") <= self.max_distance)
            .select("ord", "shard", "o", "uid", kind=pl.lit("near"), distance="distance")
        )
        first = (
            pl.concat([exact, near])
            .sort("ord", pl.col("kind") != "exact", "shard", "o")  # an identical image outranks a near one
            .group_by("ord", maintain_order=True).first()
        )
        return rows.select("ord").join(first, on="ord", how="left").select(
            "ord", duplicate_of="uid", duplicate_kind="kind", phash_distance="distance"
        ).cast(VERDICT_SCHEMA)  # type: ignore[arg-type]

    def _later_matches(self, con: sqlite3.Connection, shard: str) -> list[str]:
        """Shards after this one holding an image identical or near to one of its images."""
        exact = {r[0] for r in con.execute("SELECT DISTINCT i.shard FROM q JOIN images i ON i.sha256 = q.sha256 WHERE i.shard > ?", (shard,))}
        near = _frame(con.execute(
            "SELECT DISTINCT i.shard, q.phash, i.phash FROM qb q JOIN bands i ON i.band = q.band AND i.value = q.value WHERE i.shard > ?", (shard,)
        ), ["shard", "p", "p2"]).filter((pl.col("p").xor(pl.col("p2"))).bitwise_count_ones() <= self.max_distance)
        return sorted(exact | set(near["shard"].to_list()))

    def stale_shards(self) -> dict[str, int]:
        """Shard -> current epoch, for shards whose verdicts changed since their last ingest (an earlier shard arrived later)."""
        if not self.path.exists():
            return {}
        with self.connect() as con:
            return dict(con.execute("SELECT shard, epoch FROM shards WHERE epoch != used_epoch ORDER BY shard").fetchall())


def _load_query(con: sqlite3.Connection, rows: pl.DataFrame, bands: np.ndarray) -> None:
    """The shard's hashes as temp tables, so each lookup is one join that probes the B-tree keys."""
    con.execute("CREATE TEMP TABLE IF NOT EXISTS q (ord INTEGER, sha256 TEXT, phash INTEGER)")
    con.execute("CREATE TEMP TABLE IF NOT EXISTS qb (ord INTEGER, band INTEGER, value INTEGER, sha256 TEXT, phash INTEGER)")
    con.execute("DELETE FROM q")
    con.execute("DELETE FROM qb")
    con.executemany("INSERT INTO q VALUES (?, ?, ?)", rows.select("ord", "sha256", "phash").rows())
    con.executemany(
        "INSERT INTO qb VALUES (?, ?, ?, ?, ?)",
        [(o, b, int(bands[i, b]), s, p) for i, (o, s, p) in enumerate(rows.select("ord", "sha256", "phash").iter_rows()) for b in range(bands.shape[1])],
    )


def _frame(cursor: sqlite3.Cursor, names: list[str]) -> pl.DataFrame:
    data = cursor.fetchall()
    return pl.DataFrame(data, schema=names, orient="row") if data else pl.DataFrame(schema={n: pl.Int64 if n in ("ord", "o", "p", "p2") else pl.String for n in names})


def _fingerprint(rows: pl.DataFrame) -> str:
    """A hash of the shard's (sha256, phash) sequence: re-ingesting identical content restales nothing."""
    joined = rows.select(pl.concat_str("sha256", pl.col("phash").cast(pl.String), separator=":").str.join("\n")).item()
    return hashlib.sha1(joined.encode()).hexdigest()
