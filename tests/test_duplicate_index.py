"""The global duplicate index: the first occurrence in (shard, row) order wins, whatever order the runs take."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from caption_assets.copy_detection import Alignment
from caption_assets.duplicate_index import ImageIndex as _ImageIndex, band_values, probes
from caption_assets.ingest import ingest_shard
from caption_assets.launch import ingest_until_settled
from tests.helpers import noise_image, write_tar

SHARDS = ["a.tar", "b.tar", "c.tar", "d.tar"]


def accept_every_candidate(a: bytes | None, b: bytes | None) -> Alignment:
    """These hashes have no thumbnails: every candidate within the radius stands for a verified copy."""
    return Alignment(1.0, 0.0, 0.0, 1.0, 0.0, True)


def ImageIndex(path, max_distance: int = 4) -> _ImageIndex:  # noqa: N802 - the index under test, with the stand-in verifier
    return _ImageIndex(path, max_distance, verify=accept_every_candidate)


def rows(shard: str, sha: list[str], phash: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"uid": [f"{shard}::{i}" for i in range(len(sha))], "sha256": sha, "phash": phash},
                        schema={"uid": pl.String, "sha256": pl.String, "phash": pl.Int64})


def synthetic_crawl(seed: int = 0, per_shard: int = 40) -> dict[str, pl.DataFrame]:
    """Random 64-bit pHashes (as real photos spread them), with byte copies and 1-3 bit edits across shards."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64 - 1, size=len(SHARDS) * per_shard, dtype=np.uint64)
    sha = [f"img{i}" for i in range(len(base))]
    pick = random.Random(seed)
    for i in range(per_shard, len(base)):  # later shards copy or edit earlier images
        r = pick.random()
        j = pick.randrange(0, i - i % per_shard)
        if r < 0.15:
            sha[i], base[i] = sha[j], base[j]
        elif r < 0.3:
            base[i] = base[j] ^ np.uint64(sum(1 << b for b in pick.sample(range(64), pick.randint(1, 3))))
    base = base.view(np.int64)
    return {s: rows(s, sha[k * per_shard:(k + 1) * per_shard], base[k * per_shard:(k + 1) * per_shard].tolist()) for k, s in enumerate(SHARDS)}


def settle(index: ImageIndex, crawl: dict[str, pl.DataFrame], order: list[str], parallel: bool = False,
           fail_again: frozenset[str] = frozenset()) -> dict[str, pl.DataFrame]:
    """Ingest in ``order`` (optionally two at a time), then re-ingest stale shards with the CLI's loop
    (``ingest_until_settled``); a shard in ``fail_again`` fails its re-ingest."""
    verdicts: dict[str, pl.DataFrame] = {}

    def one(s: str) -> None:
        verdicts[s] = index.update(s, crawl[s]).verdicts

    def ingest(names: list[str], again: bool) -> list[str]:
        names = [s for s in names if not (again and s in fail_again)]
        if parallel:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(one, names))
        else:
            for s in names:
                one(s)
        return names

    ingested, rounds = ingest_until_settled(ingest, index.stale_shards, order)
    settle.rounds = rounds
    assert set(index.stale_shards()) == set(fail_again) & {s for r in rounds for s in r}
    assert sorted(ingested) == sorted(set(order) - set(index.stale_shards()))
    return verdicts


def test_sequential_order_finds_copies_and_edits_of_earlier_shards(tmp_path: Path):
    crawl = synthetic_crawl()
    got = settle(ImageIndex(tmp_path / "i.sqlite", max_distance=3), crawl, SHARDS)
    allrows = pl.concat([crawl[s].with_columns(shard=pl.lit(s), ord=pl.int_range(pl.len())) for s in SHARDS])
    for s in SHARDS:
        v = got[s].join(crawl[s].with_row_index("ord").with_columns(pl.col("ord").cast(pl.Int64)), on="ord")
        for row in v.iter_rows(named=True):
            earlier = allrows.filter((pl.col("shard") < s) | ((pl.col("shard") == s) & (pl.col("ord") < row["ord"])))
            same = earlier.filter(pl.col("sha256") == row["sha256"])
            near = earlier.filter((pl.col("sha256") != row["sha256"]) & ((pl.col("phash").xor(row["phash"])).bitwise_count_ones() <= 3))
            expected = same["uid"][0] if same.height else (near["uid"][0] if near.height else None)
            assert row["duplicate_of"] == expected, row
    kinds = pl.concat(got.values())["duplicate_kind"].drop_nulls()
    assert set(kinds) == {"exact", "copy"} and kinds.len() > 20


@pytest.mark.parametrize("order,parallel", [(["d.tar", "c.tar", "b.tar", "a.tar"], False), (["c.tar", "a.tar", "d.tar", "b.tar"], True)])
def test_any_arrival_order_settles_to_the_sequential_verdicts(tmp_path: Path, order: list[str], parallel: bool):
    crawl = synthetic_crawl(seed=1)
    sequential = settle(ImageIndex(tmp_path / "seq.sqlite"), crawl, SHARDS)
    shuffled = ImageIndex(tmp_path / "shuffled.sqlite")
    shuffled.update(order[0], crawl[order[0]])
    assert order[0] in shuffled.update("a.tar", crawl["a.tar"]).restaled  # a.tar holds first copies of its images
    got = settle(shuffled, crawl, order, parallel)
    assert settle.rounds and "a.tar" not in settle.rounds[0]  # a.tar restaled the shards ingested before it
    for s in SHARDS:
        assert got[s].equals(sequential[s]), s


def test_a_failed_re_ingest_stays_stale_and_the_loop_ends(tmp_path: Path):
    crawl = synthetic_crawl(seed=1)
    index = ImageIndex(tmp_path / "i.sqlite")
    settle(index, crawl, ["d.tar", "c.tar", "b.tar", "a.tar"], fail_again=frozenset({"c.tar"}))
    assert list(index.stale_shards()) == ["c.tar"] and len(settle.rounds) == 1  # left for the crawl sensor


def test_re_ingesting_the_same_content_restales_nothing(tmp_path: Path):
    crawl = synthetic_crawl(seed=2)
    index = ImageIndex(tmp_path / "i.sqlite")
    settle(index, crawl, SHARDS)
    assert index.update("a.tar", crawl["a.tar"]).restaled == []
    assert index.stale_shards() == {}
    changed = crawl["a.tar"].with_columns(sha256=pl.col("sha256") + "x")
    assert index.update("a.tar", changed).restaled != []


def test_a_shard_that_loses_an_image_restales_the_shards_that_copied_it(tmp_path: Path):
    index = ImageIndex(tmp_path / "i.sqlite")
    x, y, z = 0x0123456789ABCDEF, -0x1F2E3D4C5B6A7988, 0x7A5A5A5A00FF00FF  # pHashes far apart
    index.update("a.tar", rows("a.tar", ["x", "y"], [x, y]))
    b = index.update("b.tar", rows("b.tar", ["x"], [x]))
    assert b.verdicts["duplicate_of"].to_list() == ["a.tar::0"]
    assert index.update("a.tar", rows("a.tar", ["z", "y"], [z, y])).restaled == ["b.tar"]  # a no longer holds x
    assert index.update("b.tar", rows("b.tar", ["x"], [x])).verdicts["duplicate_of"].to_list() == [None]


def test_the_radius_is_fixed_per_index_file(tmp_path: Path):
    ImageIndex(tmp_path / "i.sqlite", max_distance=4).update("a.tar", rows("a.tar", ["x"], [1]))
    with pytest.raises(ValueError, match="max_distance=4"):
        ImageIndex(tmp_path / "i.sqlite", max_distance=2).update("a.tar", rows("a.tar", ["x"], [1]))


def test_every_hash_within_the_radius_is_probed_and_one_beyond_is_not_always():
    rng = np.random.default_rng(3)
    h = rng.integers(-(2**63), 2**63 - 1, size=300, dtype=np.int64)
    for radius in (2, 4):
        index = ImageIndex("unused.sqlite", max_distance=radius)
        for flipped, must_find in ((radius, True), (radius + 3, False)):
            flips = np.array([sum(1 << int(b) for b in rng.choice(64, flipped, replace=False)) for _ in h], dtype=np.uint64)
            g = (h.view(np.uint64) ^ flips).view(np.int64)
            row, band, value = probes(band_values(h, index.n_bands), index.probe_radius)
            probed = set(zip(row.tolist(), band.tolist(), value.tolist()))
            stored = band_values(g, index.n_bands)
            found = [any((i, b, int(stored[i, b])) in probed for b in range(index.n_bands)) for i in range(len(h))]
            assert all(found) if must_find else not all(found)


def test_ingest_flags_from_the_index_match_the_shard_order(tmp_path: Path):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    write_tar(crawl / "a.tar", [("0.jpg", noise_image(1)), ("0.txt", b"first texture here"), ("1.jpg", noise_image(2)), ("1.txt", b"second texture here")])
    write_tar(crawl / "b.tar", [("0.jpg", noise_image(3)), ("0.txt", b"a new texture"), ("1.jpg", noise_image(1)), ("1.txt", b"the first again")])
    index = ImageIndex(tmp_path / "i.sqlite")
    b_first = ingest_shard(crawl / "b.tar", "b.tar", duplicates=lambda r: index.update("b.tar", r).verdicts)
    assert b_first.pairs["flags"].list.len().sum() == 0  # nothing earlier known yet
    ingest_shard(crawl / "a.tar", "a.tar", duplicates=lambda r: index.update("a.tar", r).verdicts)
    assert list(index.stale_shards()) == ["b.tar"]
    b_again = ingest_shard(crawl / "b.tar", "b.tar", duplicates=lambda r: index.update("b.tar", r).verdicts)
    assert b_again.pairs.filter(pl.col("primary_flag") == "duplicate_image").select("key", "duplicate_of").rows() == [("1", "a.tar::0")]
    assert index.stale_shards() == {}
