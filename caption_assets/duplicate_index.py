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
would scan the whole table on every lookup.) Near duplicates use multi-index hashing (Norouzi et al.):
the 64-bit pHash is cut into ``m = max_distance // 2 + 1`` bands, and two hashes within ``max_distance``
bits of each other differ in at most ``max_distance // m`` (<= 1) bits on at least one band
(pigeonhole). A lookup probes each band's value and its one-bit neighbours. Wide bands (21-22 bits
at radius 4) keep the candidates per probe near zero for millions of images, so the cost stays flat;
narrow exact-match bands (13 bits) would return ~N/8192 candidates each and grow with the index.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, shard TEXT NOT NULL, ord INTEGER NOT NULL, uid TEXT NOT NULL, sha256 TEXT NOT NULL, phash INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS images_by_sha256 ON images (sha256, shard, ord);
CREATE UNIQUE INDEX IF NOT EXISTS images_by_shard ON images (shard, ord);
CREATE TABLE IF NOT EXISTS bands (
    band INTEGER NOT NULL, value INTEGER NOT NULL, image INTEGER NOT NULL, phash INTEGER NOT NULL,
    PRIMARY KEY (band, value, image)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shards (shard TEXT PRIMARY KEY, epoch INTEGER NOT NULL, used_epoch INTEGER NOT NULL, content TEXT);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

VERDICT_SCHEMA = {"ord": pl.Int64, "duplicate_of": pl.String, "duplicate_kind": pl.String, "phash_distance": pl.Int64}


def band_widths(n_bands: int) -> list[int]:
    return [64 // n_bands + (1 if i < 64 % n_bands else 0) for i in range(n_bands)]


def probes(bands: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, band, value) of every band value within ``radius`` (0 or 1) bits of each row's band values."""
    rows, m = bands.shape
    row_idx, band_idx, values = [], [], []
    for b, width in enumerate(band_widths(m)):
        masks = np.array([0] + ([1 << k for k in range(width)] if radius >= 1 else []), dtype=np.int64)
        v = bands[:, b, None] ^ masks[None, :]
        row_idx.append(np.repeat(np.arange(rows), len(masks)))
        band_idx.append(np.full(v.size, b))
        values.append(v.ravel())
    return np.concatenate(row_idx), np.concatenate(band_idx), np.concatenate(values)


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
    lookup_s: float  # time spent finding earlier and later matches (inserting is not counted)


class ImageIndex:
    """One SQLite file, safe for several processes (WAL, writers serialised by ``BEGIN IMMEDIATE``)."""

    def __init__(self, path: Path | str, max_distance: int = 4, timeout_s: float = 300.0):
        self.path = Path(path)
        self.max_distance = max_distance
        self.n_bands = max_distance // 2 + 1
        self.probe_radius = max_distance // self.n_bands
        self.timeout_s = timeout_s

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA cache_size=-131072")  # up to 128 MB of pages: the B-tree's upper levels stay in memory
            con.execute("PRAGMA mmap_size=1073741824")
            con.create_function("hamming", 2, _hamming, deterministic=True)
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
                unchanged = prior is not None and prior[1] == content
                # later shards that matched this shard's previous content lose their first occurrence too
                before = set() if unchanged or prior is None else self._later_shards(con, shard, self._stored_rows(con, shard))
                self._delete(con, shard)
                start = con.execute("SELECT coalesce(max(id), 0) + 1 FROM images").fetchone()[0]
                ids = range(start, start + rows.height)
                con.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?)",
                                zip(ids, [shard] * rows.height, rows["ord"], rows["uid"], rows["sha256"], rows["phash"]))
                con.executemany("INSERT INTO bands VALUES (?, ?, ?, ?)", _band_rows(bands, ids, rows["phash"].to_list()))
                _load_query(con, rows, bands, self.probe_radius)
                t0 = time.perf_counter()
                matches = self._matches(con)
                verdicts = self._verdicts(matches, shard, rows)
                # shards after this one holding a copy of one of its images: their first occurrence may have changed
                restaled = [] if unchanged else sorted(before | set(matches.filter(pl.col("shard") > shard)["shard"].to_list()))
                lookup_s = time.perf_counter() - t0
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
        return Update(verdicts, epoch, restaled, lookup_s)

    def _stored_rows(self, con: sqlite3.Connection, shard: str) -> pl.DataFrame:
        data = con.execute("SELECT ord, uid, sha256, phash FROM images WHERE shard = ? ORDER BY ord", (shard,)).fetchall()
        return pl.DataFrame(data, schema={"ord": pl.Int64, "uid": pl.String, "sha256": pl.String, "phash": pl.Int64}, orient="row")

    def _later_shards(self, con: sqlite3.Connection, shard: str, rows: pl.DataFrame) -> set[str]:
        """Shards after ``shard`` holding an image identical or near to one of ``rows``."""
        _load_query(con, rows, band_values(rows["phash"].to_numpy(), self.n_bands), self.probe_radius)
        return set(self._matches(con).filter(pl.col("shard") > shard)["shard"].to_list())

    def _delete(self, con: sqlite3.Connection, shard: str) -> None:
        """Remove a shard's rows; its band rows are found by key from the stored pHashes (no extra index)."""
        old = con.execute("SELECT id, phash FROM images WHERE shard = ?", (shard,)).fetchall()
        if old:
            ids, phash = zip(*old)
            keys = [r[:3] for r in _band_rows(band_values(np.array(phash), self.n_bands), ids, phash)]
            con.executemany("DELETE FROM bands WHERE band = ? AND value = ? AND image = ?", keys)
            con.execute("DELETE FROM images WHERE shard = ?", (shard,))

    def _matches(self, con: sqlite3.Connection) -> pl.DataFrame:
        """Every other indexed image identical to or within the radius of a query row, in one pass over the probes."""
        exact = _frame(con.execute(
            "SELECT q.ord, i.shard, i.ord, i.uid FROM q CROSS JOIN images i ON i.sha256 = q.sha256"
        ), ["ord", "shard", "o", "uid"]).with_columns(kind=pl.lit("exact"), distance=pl.lit(0, pl.Int64))
        # the band rows carry the full pHash, so only true matches (not every band collision) reach `images`
        near = _frame(con.execute(
            "SELECT DISTINCT q.ord, i.shard, i.ord, i.uid, hamming(q.phash, b.phash) FROM qb q "
            "CROSS JOIN bands b ON b.band = q.band AND b.value = q.value AND hamming(q.phash, b.phash) <= ? "
            "CROSS JOIN images i ON i.id = b.image WHERE i.sha256 != q.sha256", (self.max_distance,)
        ), ["ord", "shard", "o", "uid", "distance"]).select("ord", "shard", "o", "uid", kind=pl.lit("near"), distance="distance")
        return pl.concat([exact, near])

    @staticmethod
    def _verdicts(matches: pl.DataFrame, shard: str, rows: pl.DataFrame) -> pl.DataFrame:
        """Each row's first earlier occurrence in (shard, row) order: an identical image if any, else a near one."""
        earlier = (pl.col("shard") < shard) | ((pl.col("shard") == shard) & (pl.col("o") < pl.col("ord")))
        first = (
            matches.filter(earlier)
            .sort("ord", pl.col("kind") != "exact", "shard", "o")  # an identical image outranks a near one
            .group_by("ord", maintain_order=True).first()
        )
        return rows.select("ord").join(first, on="ord", how="left").select(
            "ord", duplicate_of="uid", duplicate_kind="kind", phash_distance="distance"
        ).cast(VERDICT_SCHEMA)  # type: ignore[arg-type]

    def stale_shards(self) -> dict[str, int]:
        """Shard -> current epoch, for shards whose verdicts changed since their last ingest (an earlier shard arrived later)."""
        if not self.path.exists():
            return {}
        with self.connect() as con:
            return dict(con.execute("SELECT shard, epoch FROM shards WHERE epoch != used_epoch ORDER BY shard").fetchall())


def _band_rows(bands: np.ndarray, ids, phash) -> list[tuple[int, int, int, int]]:
    return [(b, v, i, p) for i, p, row in zip(ids, phash, bands.tolist()) for b, v in enumerate(row)]


def _hamming(a: int, b: int) -> int:
    return ((a ^ b) & 0xFFFFFFFFFFFFFFFF).bit_count()


def _load_query(con: sqlite3.Connection, rows: pl.DataFrame, bands: np.ndarray, radius: int) -> None:
    """The shard's hashes and band probes as temp tables, so each lookup is one join that probes the B-tree keys."""
    con.execute("CREATE TEMP TABLE IF NOT EXISTS q (ord INTEGER, sha256 TEXT, phash INTEGER)")
    con.execute("CREATE TEMP TABLE IF NOT EXISTS qb (ord INTEGER, band INTEGER, value INTEGER, sha256 TEXT, phash INTEGER)")
    con.execute("DELETE FROM q")
    con.execute("DELETE FROM qb")
    con.executemany("INSERT INTO q VALUES (?, ?, ?)", rows.select("ord", "sha256", "phash").rows())
    row, band, value = probes(bands, radius)
    q = rows.select("ord", "sha256", "phash")[row]
    con.executemany("INSERT INTO qb VALUES (?, ?, ?, ?, ?)", zip(q["ord"], band.tolist(), value.tolist(), q["sha256"], q["phash"]))


def _frame(cursor: sqlite3.Cursor, names: list[str]) -> pl.DataFrame:
    data = cursor.fetchall()
    return pl.DataFrame(data, schema=names, orient="row") if data else pl.DataFrame(schema={n: pl.Int64 if n in ("ord", "o", "distance") else pl.String for n in names})


def _fingerprint(rows: pl.DataFrame) -> str:
    """A hash of the shard's (sha256, phash) sequence: re-ingesting identical content restales nothing."""
    joined = rows.select(pl.concat_str("sha256", pl.col("phash").cast(pl.String), separator=":").str.join("\n")).item()
    return hashlib.sha1(joined.encode()).hexdigest()
