"""The duplicate index under several writers: verification runs with no lock held, and the verdicts stay those
of the runs taking turns."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from caption_assets.duplicate_index import ImageIndex
from tests.test_duplicate_index import accept_every_candidate, rows, synthetic_crawl


def test_a_second_writer_commits_while_the_first_is_verifying(tmp_path: Path):
    """Before: the whole lookup and verification ran inside ``BEGIN IMMEDIATE``, so a second run waited for the
    first one's verification (minutes on a world shard) and failed with "database is locked"."""
    crawl = synthetic_crawl(seed=2)
    sequential = ImageIndex(tmp_path / "seq.sqlite", verify=accept_every_candidate)
    expected = {s: sequential.update(s, crawl[s]).verdicts for s in ("a.tar", "b.tar", "c.tar")}

    path = tmp_path / "i.sqlite"
    other = ImageIndex(path, timeout_s=1.0, verify=accept_every_candidate)
    other.update("a.tar", crawl["a.tar"])
    during: list = []

    def verify_while_another_writer_commits(a: bytes | None, b: bytes | None):
        if not during:  # the first pair c.tar verifies: b.tar is written meanwhile, by another connection
            during.append(other.update("b.tar", crawl["b.tar"]))
        return accept_every_candidate(a, b)

    first = ImageIndex(path, timeout_s=1.0, verify=verify_while_another_writer_commits)
    got = first.update("c.tar", crawl["c.tar"])
    assert during and during[0].attempts == 1  # the second writer did not wait for the first
    assert got.attempts == 2  # the first one saw the commit and planned again, on the state it then wrote onto
    assert got.verdicts.equals(expected["c.tar"])  # b.tar holds earlier copies of some of c.tar's images
    assert got.lock_s < 1.0 and first.stale_shards() == {}
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM images").fetchone()[0] == sum(crawl[s].height for s in ("a.tar", "b.tar", "c.tar"))
    con.close()


def write_lock_is_free(path: Path) -> bool:
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()


def test_verification_runs_with_the_write_lock_free_until_the_last_attempt(tmp_path: Path):
    """Each plan verifies with no lock held; a writer that lost ``max_attempts - 1`` plans to other commits
    makes its last one inside the write transaction (so it cannot lose again)."""
    crawl = synthetic_crawl(seed=3)
    path = tmp_path / "i.sqlite"
    other = ImageIndex(path, verify=accept_every_candidate)
    other.update("a.tar", crawl["a.tar"])
    free: list[bool] = []

    class Watched(ImageIndex):
        def _matches(self, con, shard, name="q", own=True):  # once per plan
            free.append(write_lock_is_free(path))
            if len(free) == 1:
                other.update("b.tar", crawl["b.tar"])  # a commit during the first plan
            return super()._matches(con, shard, name, own)

    got = Watched(path, verify=accept_every_candidate, max_attempts=2).update("c.tar", crawl["c.tar"])
    assert got.attempts == 2 and free == [True, False]
    sequential = ImageIndex(tmp_path / "seq.sqlite", verify=accept_every_candidate)
    expected = [sequential.update(s, crawl[s]) for s in ("a.tar", "b.tar", "c.tar")][-1]
    assert got.verdicts.equals(expected.verdicts)


def test_every_hash_within_the_radius_is_found_through_the_index(tmp_path: Path):
    """The probes are made inside the SQL join (band value and one-bit neighbours, from ``probe_masks``): every
    stored hash within the radius of a query hash is a candidate, negative (high-bit) hashes included."""
    rng = np.random.default_rng(5)
    h = rng.integers(-(2**63), 2**63 - 1, size=200, dtype=np.int64)
    for radius in (2, 4):
        index = ImageIndex(tmp_path / f"r{radius}.sqlite", max_distance=radius, verify=accept_every_candidate)
        flips = np.array([sum(1 << int(b) for b in rng.choice(64, radius, replace=False)) for _ in h], dtype=np.uint64)
        g = (h.view(np.uint64) ^ flips).view(np.int64)
        index.update("a.tar", rows("a.tar", [f"g{i}" for i in range(len(g))], g.tolist()))
        v = index.update("b.tar", rows("b.tar", [f"h{i}" for i in range(len(h))], h.tolist())).verdicts
        assert v["duplicate_of"].to_list() == [f"a.tar::{i}" for i in range(len(h))]
        assert (v["duplicate_kind"] == "copy").all()
