"""A global index of image hashes across shards: exact (sha256) and near (pHash) duplicates.

Each ``raw_pairs`` run adds its shard's hashes and asks which of its images were seen earlier, as of
the state its write commits onto: the lookup and verification (seconds to minutes for a shard of simple
scenes, with many candidates) are *planned* under a read snapshot, holding no lock, and the write
transaction (tens of milliseconds) only checks that no other writer committed since and writes the plan,
or the plan is made again (see ``ImageIndex.update``). "Earlier" is a stable order, ``(shard key, row in shard)``, not arrival time: the
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

Near hashes are *candidates*, not verdicts (``caption_assets.copy_detection``): each image is indexed
under two hash families (its full-frame pHash, radius ``max_distance``, and a blurred centre-window hash,
radius ``copy_detection.CENTRE_DISTANCE``, found through the same bands; band ``family * 8 + band``),
probes with its own hashes and with moved and scaled windows, and every candidate pair is verified by
aligning the two stored thumbnails. Only a verified pair is a ``copy``; the alignment (scale, shift,
overlap, score) is recorded with it, and the first candidate in the stable order is recorded too, so
the evaluation can tell the candidate stage from the verification.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from collections.abc import Callable

import numpy as np
import polars as pl

from caption_assets import copy_detection as cd

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, shard TEXT NOT NULL, ord INTEGER NOT NULL, uid TEXT NOT NULL, sha256 TEXT NOT NULL, phash INTEGER NOT NULL,
    thumb BLOB);
CREATE INDEX IF NOT EXISTS images_by_sha256 ON images (sha256, shard, ord);
CREATE UNIQUE INDEX IF NOT EXISTS images_by_shard ON images (shard, ord);
CREATE TABLE IF NOT EXISTS bands (
    band INTEGER NOT NULL, value INTEGER NOT NULL, image INTEGER NOT NULL, phash INTEGER NOT NULL,
    PRIMARY KEY (band, value, image, phash)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shards (shard TEXT PRIMARY KEY, epoch INTEGER NOT NULL, used_epoch INTEGER NOT NULL, content TEXT);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

VERDICT_SCHEMA = {
    "ord": pl.Int64, "duplicate_of": pl.String, "duplicate_kind": pl.String, "phash_distance": pl.Int64,
    "copy_scale": pl.Float64, "copy_dx": pl.Float64, "copy_dy": pl.Float64, "copy_overlap": pl.Float64, "copy_score": pl.Float64,
    "copy_candidates": pl.Int64, "candidate_of": pl.String,
}
FAMILY_BANDS = 8  # band ids: family * FAMILY_BANDS + band
Verifier = Callable[[bytes | None, bytes | None], "cd.Alignment | None"]


def verify_thumbs(a: bytes | None, b: bytes | None) -> cd.Alignment | None:
    """The default verifier: align the two stored thumbnails (``copy_detection.verify``)."""
    return cd.verify(cd.read_thumb(a), cd.read_thumb(b))


def hash_rows(phash: int, thumb: bytes | None, query: bool) -> list[tuple[int, int]]:
    """(family, hash) an image is stored under (``query=False``) or probes with: family 0 is the row's
    pHash; ``cd.CENTRE_FAMILY`` the blurred centre window (stored) or its moved and scaled variants (query)."""
    out = [(0, int(phash))]
    t = cd.read_thumb(thumb)
    if t is not None and not t.flat:
        family = cd.CENTRE_FAMILY
        out += [(family, h) for f, h in cd.query_hashes(t) if f == family] if query else [(family, h) for h in cd.stored_hashes(t)[1:]]
    return out


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

    verdicts: pl.DataFrame  # VERDICT_SCHEMA: duplicate_of (uid of the first occurrence), duplicate_kind exact|copy, the alignment
    epoch: int  # the index state this shard's verdicts were computed against
    restaled: list[str]
    lookup_s: float  # time the last plan spent finding earlier and later matches and verifying them (inserting is not counted)
    candidates: int = 0  # earlier candidate pairs (not identical bytes)
    verified: int = 0  # candidate pairs verified (aligned or bounded), earlier and later
    verify_s: float = 0.0  # time spent verifying, over every plan (a plan made again verifies only pairs it had not)
    lock_s: float = 0.0  # how long the write transaction (BEGIN IMMEDIATE .. COMMIT) was held
    attempts: int = 1  # plans made: another writer committing during a plan means planning again


class ImageIndex:
    """One SQLite file, safe for several processes (WAL, writers serialised by ``BEGIN IMMEDIATE``)."""

    def __init__(self, path: Path | str, max_distance: int = 4, timeout_s: float = 300.0, verify: Verifier = verify_thumbs, max_attempts: int = 6):
        self.path = Path(path)
        self.max_attempts = max(1, max_attempts)  # plans under a snapshot before the last one is made inside the write transaction
        self.max_distance = max_distance
        self.n_bands = max_distance // 2 + 1
        self.probe_radius = max_distance // self.n_bands
        self.timeout_s = timeout_s
        self.verify = verify

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
            if "thumb" not in {r[1] for r in con.execute("PRAGMA table_info(images)")}:
                con.execute("ALTER TABLE images ADD COLUMN thumb BLOB")  # an index from before copy detection: old rows get no copy verdicts until re-ingested
            stored = con.execute("SELECT value FROM settings WHERE name = 'max_distance'").fetchone()
            if stored is None:
                con.execute("INSERT OR IGNORE INTO settings VALUES ('max_distance', ?)", (str(self.max_distance),))
            elif int(stored[0]) != self.max_distance:
                raise ValueError(f"{self.path} was built with max_distance={stored[0]}, not {self.max_distance}: rebuild it (delete the file and re-ingest)")
            self._migrate_centre_hashes(con)
            yield con
        finally:
            con.close()

    def _migrate_centre_hashes(self, con: sqlite3.Connection) -> None:
        """An index from an older centre-window hash: drop every centre family's band rows and store the current
        hash of each image from its stored thumbnail, once, so old and new images keep finding each other."""
        version = str(cd.HASH_VERSION)
        stored = con.execute("SELECT value FROM settings WHERE name = 'centre_hash'").fetchone()
        if stored is not None and stored[0] == version:
            return
        con.execute("BEGIN IMMEDIATE")
        try:
            stored = con.execute("SELECT value FROM settings WHERE name = 'centre_hash'").fetchone()  # another process may have done it
            if stored is None or stored[0] != version:
                # an image is stored under several centre hashes that may share a band value: the key holds the hash
                con.execute("CREATE TABLE bands_new (band INTEGER NOT NULL, value INTEGER NOT NULL, image INTEGER NOT NULL, phash INTEGER NOT NULL, "
                            "PRIMARY KEY (band, value, image, phash)) WITHOUT ROWID")
                con.execute("INSERT INTO bands_new SELECT * FROM bands WHERE band < ?", (FAMILY_BANDS,))
                con.execute("DROP TABLE bands")
                con.execute("ALTER TABLE bands_new RENAME TO bands")
                cursor = con.execute("SELECT id, phash, thumb FROM images WHERE thumb IS NOT NULL")
                while chunk := cursor.fetchmany(5000):
                    ids, phash, thumb = zip(*chunk)
                    frame = pl.DataFrame({"phash": list(phash), "thumb": list(thumb)}, schema={"phash": pl.Int64, "thumb": pl.Binary})
                    con.executemany("INSERT OR IGNORE INTO bands VALUES (?, ?, ?, ?)", [r for r in self._band_rows(ids, frame) if r[0] >= FAMILY_BANDS])
                con.execute("INSERT INTO settings VALUES ('centre_hash', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value", (version,))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def update(self, shard: str, rows: pl.DataFrame) -> Update:
        """Replace ``shard``'s rows (``uid``, ``sha256``, ``phash`` and optionally ``thumb``, in shard order) and return their verdicts.

        The slow part (candidate lookup and verification) is *planned* under a read snapshot, with no lock held;
        then a short write transaction checks that nobody committed since the snapshot (SQLite's
        ``data_version``) and writes the plan. If somebody did, the plan is made again on the new state
        (pairs already verified are remembered, so only new candidates cost anything); after
        ``max_attempts`` plans the last one is made inside the write transaction. Either way the verdicts
        are those of a plan made on exactly the state the write commits onto, as if the runs had taken
        turns."""
        if "thumb" not in rows.columns:
            rows = rows.with_columns(thumb=pl.lit(None, dtype=pl.Binary))
        rows = rows.select("uid", "sha256", "phash", "thumb").with_row_index("ord").with_columns(pl.col("ord").cast(pl.Int64))
        content = _fingerprint(rows)
        verify = _Memo(cd.PairVerifier() if self.verify is verify_thumbs else self.verify)
        own = self._own_rows(rows)
        with self.connect() as con:
            self._load_own(con, rows, own)
            self._load_query(con, rows)
            for attempt in range(1, self.max_attempts + 1):
                last = attempt == self.max_attempts
                if not last:
                    con.execute("BEGIN")  # deferred: a read snapshot from the first read on
                    try:
                        version = _data_version(con)
                        plan = self._plan(con, shard, rows, content, verify)
                    finally:
                        con.execute("COMMIT")  # ends the read (only temp tables were written)
                con.execute("BEGIN IMMEDIATE")  # waits (up to timeout_s) while another writer holds the lock
                t_lock = time.perf_counter()
                try:
                    if not last and _data_version(con) != version:
                        con.execute("ROLLBACK")  # another writer committed since the snapshot: plan again
                        continue
                    if last:
                        plan = self._plan(con, shard, rows, content, verify)
                    self._write(con, shard, rows, own, plan)
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                lock_s = time.perf_counter() - t_lock
                break
        stats = plan.stats
        return Update(plan.verdicts, plan.epoch, plan.restaled, plan.lookup_s, stats["candidates"], stats["verified"], verify.seconds,
                      lock_s, attempt)

    def _plan(self, con: sqlite3.Connection, shard: str, rows: pl.DataFrame, content: str, verify: Verifier) -> _Plan:
        """Everything ``update`` writes, read from the current state of the index (nothing is written to it)."""
        prior = con.execute("SELECT epoch, content FROM shards WHERE shard = ?", (shard,)).fetchone()
        epoch = prior[0] if prior else 0
        unchanged = prior is not None and prior[1] == content
        old = con.execute("SELECT id, phash, thumb FROM images WHERE shard = ?", (shard,)).fetchall()
        # later shards that matched this shard's previous content lose their first occurrence too
        before = set() if unchanged or prior is None else self._later_shards(con, shard, self._stored_rows(con, shard), verify)
        t0 = time.perf_counter()
        matches = self._matches(con, shard)
        verdicts, stats = self._verdicts(con, matches, shard, rows, verify)
        # shards after this one holding a copy of one of its images: their first occurrence may have changed
        restaled = [] if unchanged else sorted(before | self._later(con, matches, shard, rows, stats, verify))
        lookup_s = time.perf_counter() - t0
        old_bands = []
        if old:
            ids, phash, thumb = zip(*old)
            frame = pl.DataFrame({"phash": list(phash), "thumb": list(thumb)}, schema={"phash": pl.Int64, "thumb": pl.Binary})
            old_bands = [r[:3] for r in self._band_rows(ids, frame)]
        return _Plan(verdicts, epoch, restaled, lookup_s, stats, old_bands, content)

    def _write(self, con: sqlite3.Connection, shard: str, rows: pl.DataFrame, own: list[tuple[int, int, int, int]], plan: _Plan) -> None:
        """Inside the write transaction: replace the shard's rows and band rows, bump restaled shards' epochs."""
        con.executemany("DELETE FROM bands WHERE band = ? AND value = ? AND image = ?", plan.old_bands)
        con.execute("DELETE FROM images WHERE shard = ?", (shard,))
        start = con.execute("SELECT coalesce(max(id), 0) + 1 FROM images").fetchone()[0]
        con.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?)",
                        zip(range(start, start + rows.height), [shard] * rows.height, rows["ord"], rows["uid"], rows["sha256"], rows["phash"], rows["thumb"]))
        con.executemany("INSERT INTO bands VALUES (?, ?, ?, ?)", [(b, v, start - image - 1, h) for b, v, image, h in own])  # own ids: -(ord + 1)
        if plan.restaled:
            con.executemany("UPDATE shards SET epoch = epoch + 1 WHERE shard = ?", [(s,) for s in plan.restaled])
        con.execute(
            "INSERT INTO shards VALUES (?, ?, ?, ?) ON CONFLICT (shard) DO UPDATE SET used_epoch = excluded.used_epoch, content = excluded.content",
            (shard, plan.epoch, plan.epoch, plan.content),
        )

    def _own_rows(self, rows: pl.DataFrame) -> list[tuple[int, int, int, int]]:
        """The shard's own band rows, its images numbered -(ord + 1) until they get their ids."""
        return self._band_rows([-(o + 1) for o in rows["ord"].to_list()], rows)

    def _load_own(self, con: sqlite3.Connection, rows: pl.DataFrame, own: list[tuple[int, int, int, int]]) -> None:
        """The shard's own images as temp tables beside ``images`` and ``bands``: a row's earlier rows in the same
        shard are found by the same joins, before the shard is written."""
        con.execute("CREATE TEMP TABLE IF NOT EXISTS own_images (id INTEGER PRIMARY KEY, ord INTEGER, uid TEXT, sha256 TEXT)")
        con.execute("CREATE INDEX IF NOT EXISTS temp.own_by_sha256 ON own_images (sha256)")
        con.execute("CREATE TEMP TABLE IF NOT EXISTS own_bands (band INTEGER, value INTEGER, image INTEGER, phash INTEGER, PRIMARY KEY (band, value, image, phash)) WITHOUT ROWID")
        con.execute("DELETE FROM own_images")
        con.execute("DELETE FROM own_bands")
        con.executemany("INSERT INTO own_images VALUES (?, ?, ?, ?)", [(-(o + 1), o, u, h) for o, u, h in rows.select("ord", "uid", "sha256").iter_rows()])
        con.executemany("INSERT INTO own_bands VALUES (?, ?, ?, ?)", own)

    def _band_rows(self, ids, rows: pl.DataFrame) -> list[tuple[int, int, int, int]]:
        out = []
        for i, ph, thumb in zip(ids, rows["phash"].to_list(), rows["thumb"].to_list()):
            for family, h in hash_rows(ph, thumb, query=False):
                for b, v in enumerate(band_values(np.array([h], dtype=np.int64), self.n_bands)[0].tolist()):
                    out.append((family * FAMILY_BANDS + b, v, i, h))
        return out

    def _stored_rows(self, con: sqlite3.Connection, shard: str) -> pl.DataFrame:
        data = con.execute("SELECT ord, uid, sha256, phash, thumb FROM images WHERE shard = ? ORDER BY ord", (shard,)).fetchall()
        return pl.DataFrame(data, schema={"ord": pl.Int64, "uid": pl.String, "sha256": pl.String, "phash": pl.Int64, "thumb": pl.Binary}, orient="row")

    def _later_shards(self, con: sqlite3.Connection, shard: str, rows: pl.DataFrame, verify: Verifier) -> set[str]:
        """Shards after ``shard`` holding an image identical to or a verified copy of one of ``rows``."""
        self._load_query(con, rows, "p")
        return self._later(con, self._matches(con, shard, "p", own=False), shard, rows, {"candidates": 0, "verified": 0, "verify_s": 0.0}, verify)

    def _load_query(self, con: sqlite3.Connection, rows: pl.DataFrame, name: str = "q") -> None:
        """The shard's sha256s (temp table ``name``) and the hashes it probes with (``name``_h: each with its
        radius), so each lookup is one join that probes the B-tree keys. The probes themselves, a band's value
        and its one-bit neighbours, are made in the join from ``probe_masks`` (a few dozen rows), not stored."""
        con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (ord INTEGER, sha256 TEXT, phash INTEGER)")
        con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name}_h (ord INTEGER, family INTEGER, sha256 TEXT, phash INTEGER, dist INTEGER)")
        con.execute("CREATE TEMP TABLE IF NOT EXISTS probe_masks (band INTEGER, shift INTEGER, width_mask INTEGER, flip INTEGER)")
        con.execute(f"DELETE FROM {name}")
        con.execute(f"DELETE FROM {name}_h")
        con.execute("DELETE FROM probe_masks")
        masks, shift = [], 0
        for b, width in enumerate(band_widths(self.n_bands)):
            masks += [(b, shift, (1 << width) - 1, flip) for flip in [0] + ([1 << k for k in range(width)] if self.probe_radius >= 1 else [])]
            shift += width
        con.executemany("INSERT INTO probe_masks VALUES (?, ?, ?, ?)", masks)
        con.executemany(f"INSERT INTO {name} VALUES (?, ?, ?)", rows.select("ord", "sha256", "phash").rows())
        centre = max(self.max_distance, cd.CENTRE_DISTANCE)  # centre windows accept more drift (only a candidate: verification decides)
        con.executemany(f"INSERT INTO {name}_h VALUES (?, ?, ?, ?, ?)", [
            (o, family, sha, h, self.max_distance if family == 0 else centre)
            for o, sha, ph, thumb in rows.select("ord", "sha256", "phash", "thumb").iter_rows() for family, h in hash_rows(ph, thumb, query=True)])

    def _matches(self, con: sqlite3.Connection, shard: str, name: str = "q", own: bool = True) -> pl.DataFrame:
        """Every other indexed image identical to a query row, or a candidate copy of it (a hash of one of
        its families within the radius), in one pass over the probes. ``shard``'s stored rows are left out
        (the write replaces them); with ``own``, its new rows (temp tables ``own_*``) are matched instead."""
        # a probe: band b of the hash (bits shift .. shift + width, SQLite's >> sign-extends but the mask drops
        # those bits) XOR one flipped bit (SQLite has no XOR: (v | f) - (v & f)); the band rows carry the full
        # hash, so only true candidates (not every band collision) reach `images`
        value = "((h.phash >> m.shift) & m.width_mask)"
        sources = [("images", "bands", "i.shard", "AND i.shard != :shard")] + ([("own_images", "own_bands", ":shard", "")] if own else [])
        exact, near = [], []
        for images, bands, shard_col, where in sources:
            exact.append(_frame(con.execute(
                f"SELECT q.ord, {shard_col}, i.ord, i.uid, i.id FROM {name} q CROSS JOIN {images} i ON i.sha256 = q.sha256 WHERE 1 {where}",
                {"shard": shard}), ["ord", "shard", "o", "uid", "id"]))
            near.append(_frame(con.execute(
                f"SELECT DISTINCT h.ord, {shard_col}, i.ord, i.uid, i.id FROM {name}_h h CROSS JOIN probe_masks m "
                f"CROSS JOIN {bands} b ON b.band = h.family * {FAMILY_BANDS} + m.band AND b.value = ({value} | m.flip) - ({value} & m.flip) "
                f"AND hamming(h.phash, b.phash) <= h.dist "
                f"CROSS JOIN {images} i ON i.id = b.image WHERE i.sha256 != h.sha256 {where}",
                {"shard": shard}), ["ord", "shard", "o", "uid", "id"]))
        return pl.concat([pl.concat(exact).with_columns(kind=pl.lit("exact")),
                          pl.concat(near).unique(["ord", "id"]).with_columns(kind=pl.lit("candidate"))])

    def _thumbs(self, con: sqlite3.Connection, ids: list[int], rows: pl.DataFrame | None = None) -> dict[int, tuple[bytes | None, int]]:
        """(thumb, phash) by image id; negative ids are ``rows``' own images, -(ord + 1)."""
        out: dict[int, tuple[bytes | None, int]] = {}
        stored = sorted({i for i in ids if i > 0})
        for k in range(0, len(stored), 500):
            chunk = stored[k:k + 500]
            out |= {i: (t, p) for i, t, p in con.execute(f"SELECT id, thumb, phash FROM images WHERE id IN ({','.join('?' * len(chunk))})", chunk)}
        if rows is not None:
            thumbs, phash = rows["thumb"].to_list(), rows["phash"].to_list()
            out |= {i: (thumbs[-i - 1], phash[-i - 1]) for i in set(ids) if i < 0}
        return out

    def _verdicts(self, con: sqlite3.Connection, matches: pl.DataFrame, shard: str, rows: pl.DataFrame, verify: Verifier) -> tuple[pl.DataFrame, dict]:
        """Each row's first earlier occurrence in (shard, row) order: an identical image if any, else the
        first candidate (in that order) that verification accepts."""
        earlier = (pl.col("shard") < shard) | ((pl.col("shard") == shard) & (pl.col("o") < pl.col("ord")))
        before = matches.filter(earlier).sort("ord", pl.col("kind") != "exact", "shard", "o")
        exact = before.filter(pl.col("kind") == "exact").group_by("ord", maintain_order=True).first()
        cands = before.filter((pl.col("kind") == "candidate") & ~pl.col("ord").is_in(exact["ord"].implode()))
        summary = cands.group_by("ord", maintain_order=True).agg(copy_candidates=pl.len(), candidate_of=pl.col("uid").first())
        stats = {"candidates": cands.height, "verified": 0, "verify_s": 0.0}
        thumbs = self._thumbs(con, cands["id"].to_list(), rows)
        query = dict(zip(rows["ord"].to_list(), zip(rows["thumb"].to_list(), rows["phash"].to_list())))
        found = []
        t0 = time.perf_counter()
        if isinstance(verify, _Memo):  # the cheap rejections first, in the verifier's own order (its caches)
            verify.screen([(thumbs[image][0], query[o][0]) for o, image in cands.select("ord", "id").iter_rows()])
        for o, uid, image in cands.select("ord", "uid", "id").iter_rows():  # in stable order: the first accepted wins
            if found and found[-1][0] == o:
                continue
            stats["verified"] += 1
            al = verify(thumbs[image][0], query[o][0])
            if al is not None and al.accepted:
                found.append((o, uid, "copy", _hamming(thumbs[image][1], query[o][1]), al.scale, al.dx, al.dy, al.overlap, al.score))
        stats["verify_s"] = time.perf_counter() - t0
        copies = pl.DataFrame(found, schema=["ord", "duplicate_of", "duplicate_kind", "phash_distance", "copy_scale", "copy_dx", "copy_dy", "copy_overlap", "copy_score"],
                              orient="row").cast({"ord": pl.Int64, "phash_distance": pl.Int64, **{c: pl.Float64 for c in ("copy_scale", "copy_dx", "copy_dy", "copy_overlap", "copy_score")}})
        exact_v = exact.select("ord", duplicate_of="uid", duplicate_kind="kind", phash_distance=pl.lit(0, pl.Int64))
        first = pl.concat([exact_v, copies], how="diagonal_relaxed")
        out = rows.select("ord").join(first, on="ord", how="left").join(summary, on="ord", how="left")
        out = out.with_columns(pl.col("copy_candidates").fill_null(0))
        return out.select(list(VERDICT_SCHEMA)).cast(VERDICT_SCHEMA), stats  # type: ignore[arg-type]

    def _later(self, con: sqlite3.Connection, matches: pl.DataFrame, shard: str, rows: pl.DataFrame, stats: dict, verify: Verifier) -> set[str]:
        """Later shards holding an identical image or a verified copy of one of ``rows``."""
        later = matches.filter(pl.col("shard") > shard)
        out = set(later.filter(pl.col("kind") == "exact")["shard"].to_list())
        # one later image against its candidates in a row (the verifier caches per image); the set found is the same in any order
        cands = later.filter((pl.col("kind") == "candidate") & ~pl.col("shard").is_in(list(out))).sort("id", "ord")
        if cands.height:
            thumbs = self._thumbs(con, cands["id"].to_list())
            query = dict(zip(rows["ord"].to_list(), rows["thumb"].to_list()))
            t0 = time.perf_counter()
            for o, s, image in cands.select("ord", "shard", "id").iter_rows():
                if s in out:
                    continue
                stats["verified"] += 1
                al = verify(query[o], thumbs[image][0])
                if al is not None and al.accepted:
                    out.add(s)
            stats["verify_s"] += time.perf_counter() - t0
        return out

    def stale_shards(self) -> dict[str, int]:
        """Shard -> current epoch, for shards whose verdicts changed since their last ingest (an earlier shard arrived later)."""
        if not self.path.exists():
            return {}
        with self.connect() as con:
            return dict(con.execute("SELECT shard, epoch FROM shards WHERE epoch != used_epoch ORDER BY shard").fetchall())


@dataclass(frozen=True)
class _Plan:
    """What one ``update`` will write, computed from one state of the index."""

    verdicts: pl.DataFrame
    epoch: int
    restaled: list[str]
    lookup_s: float
    stats: dict
    old_bands: list[tuple[int, int, int]]  # (band, value, image) of the shard's stored rows, to delete by key
    content: str


class _Memo:
    """A verifier that remembers its verdicts by the two thumbnails (a pure function of them), so planning again
    after another writer's commit only verifies the pairs that commit added."""

    def __init__(self, verify: Verifier):
        self.verify = verify
        self.done: dict[tuple[bytes | None, bytes | None], cd.Alignment | None] = {}
        self.seconds = 0.0  # spent verifying, over every plan

    def screen(self, pairs: list[tuple[bytes | None, bytes | None]]) -> None:
        """Remember as rejected the pairs the verifier's cheap tests reject, taken in the order it prefers
        (``PairVerifier.screen``); a verifier without ``screen`` decides every pair when asked."""
        screen = getattr(self.verify, "screen", None)
        todo = [p for p in dict.fromkeys(pairs) if p not in self.done]
        if screen is None or not todo:
            return
        t0 = time.perf_counter()
        for pair, keep in zip(todo, screen(todo)):
            if not keep:
                self.done[pair] = cd.PairVerifier.REJECTED
        self.seconds += time.perf_counter() - t0

    def __call__(self, a: bytes | None, b: bytes | None) -> cd.Alignment | None:
        key = (a, b)
        if key not in self.done:
            t0 = time.perf_counter()
            self.done[key] = self.verify(a, b)
            self.seconds += time.perf_counter() - t0
        return self.done[key]


def _data_version(con: sqlite3.Connection) -> int:
    """SQLite's count of commits by other connections, as of this connection's current read (started here if none is)."""
    con.execute("SELECT 1 FROM settings LIMIT 1").fetchall()
    return con.execute("PRAGMA data_version").fetchone()[0]


def _hamming(a: int, b: int) -> int:
    return ((a ^ b) & 0xFFFFFFFFFFFFFFFF).bit_count()


def _frame(cursor: sqlite3.Cursor, names: list[str]) -> pl.DataFrame:
    data = cursor.fetchall()
    return pl.DataFrame(data, schema=names, orient="row") if data else pl.DataFrame(schema={n: pl.Int64 if n in ("ord", "o", "id", "distance") else pl.String for n in names})


def _fingerprint(rows: pl.DataFrame) -> str:
    """A hash of the shard's (sha256, phash) sequence: re-ingesting identical content restales nothing."""
    joined = rows.select(pl.concat_str("sha256", pl.col("phash").cast(pl.String), (pl.col("thumb").is_not_null()).cast(pl.String), separator=":").str.join("\n")).item()
    return hashlib.sha1(joined.encode()).hexdigest()
