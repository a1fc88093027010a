"""Each shard format and each quarantine reason, with exact counts (pure layer, no Dagster)."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from caption_assets.ingest import ingest_shard
from caption_assets.readers import read_image_bytes
from caption_assets.shards import ShardKind, discover_shards, shard_kind
from tests.helpers import image_bytes, png_bomb, wds_members, write_parquet, write_tar


def reasons(result) -> list[str]:
    return sorted(result.quarantine["reason"].to_list())


def reconciles(result) -> bool:
    return result.seen == result.pairs.height + result.quarantine.height


def test_webdataset_tar_pairs_and_pointers(tmp_path: Path):
    shard = write_tar(tmp_path / "a.tar", wds_members(5) + [("00005.png", image_bytes(fmt="PNG", seed=9)), ("00005.json", json.dumps({"caption": "a png from json", "url": "http://x/y.png", "extra": 1}).encode())])
    res = ingest_shard(shard, "a.tar")
    assert (res.seen, res.pairs.height, res.quarantine.height) == (6, 6, 0)
    row = res.pairs.filter(pl.col("key") == "00005").row(0, named=True)
    assert (row["format"], row["caption"], row["url"], row["container"]) == ("png", "a png from json", "http://x/y.png", "tar")
    assert json.loads(row["meta_json"])["extra"] == 1
    # the pointer reads back exactly the member's bytes, without a second copy anywhere
    for r in res.pairs.iter_rows(named=True):
        data = read_image_bytes(r["container"], r["image_path"], r["image_member"], r["image_offset"], r["image_length"])
        import hashlib

        assert hashlib.sha256(data).hexdigest() == r["sha256"]
    assert res.pairs["uid"].to_list()[0] == "a.tar::00000"


def test_img2dataset_parquet_with_bytes_and_status(tmp_path: Path):
    rows = [{"key": f"{i:03d}", "url": f"http://e/{i}", "caption": f"a photo of thing {i}", "status": "success", "jpg": image_bytes(seed=i + 1)} for i in range(9)]
    rows.append({"key": "009", "url": "http://e/9", "caption": "gone", "status": "failed_to_download", "jpg": None})
    schema = pa.schema([("key", pa.string()), ("url", pa.string()), ("caption", pa.string()), ("status", pa.string()), ("jpg", pa.binary())])
    shard = write_parquet(tmp_path / "b.parquet", rows, schema)
    assert shard_kind(shard) is ShardKind.IMG2DATASET_PARQUET
    res = ingest_shard(shard, "b.parquet")
    assert (res.seen, res.pairs.height, reasons(res)) == (10, 9, ["download_failed"])
    r = res.pairs.filter(pl.col("key") == "007").row(0, named=True)
    assert r["container"] == "parquet" and r["image_offset"] == 7
    import hashlib

    assert hashlib.sha256(read_image_bytes("parquet", r["image_path"], "jpg", 7, r["image_length"])).hexdigest() == r["sha256"]


def test_img2dataset_tar_caption_in_json(tmp_path: Path):
    members = []
    for i in range(3):
        members.append((f"{i:09d}.jpg", image_bytes(seed=i + 1)))
        members.append((f"{i:09d}.json", json.dumps({"caption": f"json caption {i}", "url": f"http://u/{i}", "status": "success", "key": f"{i:09d}"}).encode()))
    res = ingest_shard(write_tar(tmp_path / "c.tar", members), "c.tar")
    assert res.pairs["caption"].to_list() == ["json caption 0", "json caption 1", "json caption 2"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_manifest_beside_image_folder(tmp_path: Path, suffix: str):
    (tmp_path / "imgs").mkdir()
    rows = []
    for i in range(4):
        (tmp_path / "imgs" / f"{i}.jpg").write_bytes(image_bytes(seed=i + 1))
        rows.append({"image_path": f"imgs/{i}.jpg", "caption": f"manifest caption {i}", "url": f"http://m/{i}"})
    rows.append({"image_path": "imgs/missing.jpg", "caption": "not there", "url": ""})
    rows.append({"image_path": "../outside.jpg", "caption": "climbs out", "url": ""})
    path = tmp_path / f"m{suffix}"
    if suffix == ".csv":
        pl.DataFrame(rows).write_csv(path)
    elif suffix == ".jsonl":
        pl.DataFrame(rows).write_ndjson(path)
    else:
        pl.DataFrame(rows).write_parquet(path)
    assert shard_kind(path) is ShardKind.MANIFEST
    res = ingest_shard(path, path.name)
    assert (res.seen, res.pairs.height) == (6, 4)
    assert reasons(res) == ["missing_image_file", "unsafe_path"]
    assert sorted(res.pairs["key"].to_list()) == ["0", "1", "2", "3"]


def test_every_quarantine_reason_in_one_tar(tmp_path: Path):
    good = image_bytes(seed=3)
    members = wds_members(3) + [
        ("bad1.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 3), ("bad1.txt", b"corrupt"),
        ("bad2.jpg", good[: len(good) // 2]), ("bad2.txt", b"truncated"),
        ("bad3.png", png_bomb()), ("bad3.txt", b"bomb"),
        ("bad4.jpg", b""), ("bad4.txt", b"zero bytes"),
        ("bad5.jpg", b"just some text in an image member"), ("bad5.txt", b"text"),
        ("bad6.jpg", good),  # no caption
        ("bad7.txt", b"caption without image"),
        ("bad8.jpg", good), ("bad8.txt", "na\xefve caf\xe9".encode("latin-1")),
        ("bad9.jpg", good), ("bad9.txt", b"   \n"),
        ("bad10.jpg", good), ("bad10.txt", b"x" * 1_000_000),
        ("00001.jpg", good), ("00001.txt", b"duplicate key later in the shard"),
        ("/abs/evil.jpg", good),
        ("../../evil.txt", b"escape"),
        ("bad11.gif", b"GIF89a"), ("bad11.txt", b"gif only"),
    ]
    res = ingest_shard(write_tar(tmp_path / "h.tar", members), "h.tar")
    assert reasons(res) == sorted([
        "corrupt_image", "truncated_image", "decompression_bomb", "empty_image", "not_an_image", "missing_caption",
        "missing_image", "caption_not_utf8", "empty_caption", "caption_too_long", "duplicate_key", "unsafe_path",
        "unsafe_path", "missing_image",
    ])
    assert res.pairs.height == 3 and reconciles(res)
    assert all(res.quarantine["message"].str.len_chars() > 5)


def test_bomb_is_rejected_without_decoding(tmp_path: Path):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = ingest_shard(write_tar(tmp_path / "b.tar", [("x.png", png_bomb()), ("x.txt", b"a bomb")]), "b.tar")
    assert reasons(res) == ["decompression_bomb"]
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200  # a full decode would need ~900 MB


def test_truncated_tar_keeps_what_came_before(tmp_path: Path):
    path = write_tar(tmp_path / "t.tar", wds_members(6))
    data = path.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2 + 100])
    res = ingest_shard(cut, "cut.tar")
    assert "truncated_tar" in reasons(res) and reconciles(res)
    assert 0 < res.pairs.height < 6


def test_a_repeated_extension_starts_a_new_sample(tmp_path: Path):
    # two adjacent samples under one key: both are counted, the second is the duplicate
    a, b = image_bytes(seed=1), image_bytes(seed=2)
    res = ingest_shard(write_tar(tmp_path / "r.tar", [("k.jpg", a), ("k.txt", b"one"), ("k.jpg", b), ("k.txt", b"two")]), "r.tar")
    assert (res.seen, res.pairs["caption"].to_list(), reasons(res)) == (2, ["one"], ["duplicate_key"])


def test_unreadable_and_empty_shards(tmp_path: Path):
    (tmp_path / "empty.tar").write_bytes(b"")
    res = ingest_shard(tmp_path / "empty.tar", "empty.tar")
    assert (res.seen, res.pairs.height, res.quarantine.height) == (0, 0, 0)
    (tmp_path / "junk.tar").write_bytes(b"this is not a tar archive at all" * 40)
    res = ingest_shard(tmp_path / "junk.tar", "junk.tar")
    assert reasons(res) == ["unreadable_shard"] and res.seen == 1
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 garbage")
    assert reasons(ingest_shard(tmp_path / "junk.parquet", "junk.parquet")) == ["unreadable_shard"]


def test_manifest_with_wrong_types_and_missing_columns(tmp_path: Path):
    (tmp_path / "i.jpg").write_bytes(image_bytes(seed=1))
    pl.DataFrame({"image_path": ["i.jpg", "i.jpg"], "caption": [1, 2], "key": ["a", "b"]}).write_parquet(tmp_path / "types.parquet")
    assert reasons(ingest_shard(tmp_path / "types.parquet", "types.parquet")) == ["manifest_schema", "manifest_schema"]
    pl.DataFrame({"caption": ["no path column"] * 3}).write_csv(tmp_path / "nocol.csv")
    res = ingest_shard(tmp_path / "nocol.csv", "nocol.csv")
    assert reasons(res) == ["manifest_schema"] * 3 and reconciles(res)
    (tmp_path / "bad.jsonl").write_text('{"image_path": "i.jpg", "caption": "ok one", "key": "k"}\n{not json\n[1,2]\n')
    res = ingest_shard(tmp_path / "bad.jsonl", "bad.jsonl")
    assert (res.pairs.height, reasons(res)) == (1, ["manifest_schema", "manifest_schema"])


def test_caption_normalisation_repairs_mojibake_and_html(tmp_path: Path):
    members = [("a.jpg", image_bytes(seed=1)), ("a.txt", "Caf\u00c3\u00a9 &amp; <b>croissant</b>\n\t on   the terrace".encode())]
    res = ingest_shard(write_tar(tmp_path / "n.tar", members), "n.tar")
    row = res.pairs.row(0, named=True)
    assert row["caption"] == "Café & croissant on the terrace"
    assert row["caption_raw"].startswith("Caf\u00c3\u00a9 &amp;")


def test_discover_shards_lists_each_shard_file_once(tmp_path: Path):
    write_tar(tmp_path / "a.tar", wds_members(1))
    (tmp_path / "sub").mkdir()
    write_tar(tmp_path / "sub" / "b.tar", wds_members(1))
    (tmp_path / "sub" / "img.jpg").write_bytes(image_bytes())
    (tmp_path / ".hidden.tar").write_bytes(b"")
    assert discover_shards(tmp_path) == ["a.tar", "sub/b.tar"]


def test_what_the_fuzzer_found(tmp_path: Path):
    """Each of these once escaped ingest (tests/test_fuzz_shards.py found them); each is now a quarantine row."""
    import os
    import tarfile

    # a header that claims 6 GB: read() would have allocated it before finding the shard too short
    write_tar(tmp_path / "big.tar", wds_members(2))
    data = bytearray((tmp_path / "big.tar").read_bytes())
    second = next(i for i in range(512, len(data), 512) if data[i + 257: i + 262] == b"ustar")
    data[second + 124: second + 136] = f"{6_324_739_034:011o}\0".encode()
    data[second + 148: second + 156] = b" " * 8
    data[second + 148: second + 156] = f"{sum(data[second: second + 512]):06o}\0 ".encode()
    (tmp_path / "big.tar").write_bytes(bytes(data))
    r = ingest_shard(tmp_path / "big.tar", "big.tar")
    assert r.pairs.height == 0 and r.quarantine.select("key", "reason").rows() == [("00000", "missing_caption"), (None, "truncated_tar")]
    assert "past the end of the shard" in r.quarantine["message"][1]
    with tarfile.open(tmp_path / "big.tar") as tf:  # the first member is intact
        assert tf.next().name == "00000.jpg"

    # an img2dataset parquet with a caption that is not UTF-8: that row alone is quarantined
    good = image_bytes(seed=3)
    write_parquet(tmp_path / "text.parquet", [{"key": f"k{i}", "caption": f"caption {i}", "jpg": good} for i in range(6)])
    data = (tmp_path / "text.parquet").read_bytes()
    at = data.index(b"caption 5")
    (tmp_path / "text.parquet").write_bytes(data[:at] + b"\xc0" + data[at + 1:])
    r = ingest_shard(tmp_path / "text.parquet", "text.parquet")
    assert r.pairs["key"].to_list() == ["k0", "k1", "k2", "k3", "k4"]
    assert r.quarantine.select("key", "member", "reason").rows() == [(None, "row 5", "unreadable_row")]

    # a CSV row with more cells than its header, and a key that is not UTF-8
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(good)
    (tmp_path / "m.csv").write_bytes(b"key,image_path,caption\nk1,imgs/a.jpg,a red square,surplus,cells\nk\xff2,imgs/a.jpg,a red square\n")
    r = ingest_shard(tmp_path / "m.csv", "m.csv")
    assert r.pairs["key"].to_list() == ["k1"] and json.loads(r.pairs["meta_json"][0]) == {"None": ["surplus", "cells"]}
    assert r.quarantine.select("key", "reason").rows() == [("k\\xff2", "key_not_utf8")]

    # manifest paths that leave the shard's folder: through a link inside it, or cut short by a NUL byte
    (tmp_path / "outside.jpg").write_bytes(good)
    crawl = tmp_path / "crawl"
    (crawl / "imgs").mkdir(parents=True)
    os.symlink(tmp_path / "outside.jpg", crawl / "imgs" / "link.jpg")
    rows = [{"key": "l", "image_path": "imgs/link.jpg", "caption": "x"}, {"key": "n", "image_path": "imgs/link.jpg\x00.png", "caption": "x"}]
    (crawl / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = ingest_shard(crawl / "m.jsonl", "m.jsonl")
    assert r.pairs.height == 0 and r.quarantine.select("key", "reason").rows() == [("l", "unsafe_path"), ("n", "unsafe_path")]
