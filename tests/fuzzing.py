"""Mutated shards of every input format, for the ingest fuzz test and ``bench/fuzz.py``.

Each example writes one valid shard (WebDataset tar, img2dataset tar + sidecar, img2dataset folder +
sidecar, img2dataset parquet, manifest JSONL / CSV / parquet), mutates it the way a crawl goes wrong
(bit flips, truncation at any offset, member names and header sizes, sidecar rows, manifest rows, links
and paths that point outside), and ingests it. The property: no exception escapes ingest, every record is
a raw pair or a quarantine row with a reason, counts reconcile, every pointer reads back the bytes that
were hashed, and no file outside the crawl folder is opened (an audit hook watches every ``open``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caption_assets.images import inspect_image
from caption_assets.ingest import IngestLimits, ingest_shard
from caption_assets.readers import read_image_bytes
from tests.helpers import noise_image

FORMATS = ("webdataset", "img2dataset_tar", "img2dataset_folder", "img2dataset_parquet", "manifest_jsonl", "manifest_csv", "manifest_parquet")
N_GOOD = 3
REASON = re.compile(r"^[a-z][a-z0-9_]*$")
IMAGES = [noise_image(i + 1, size=(40, 40)) for i in range(N_GOOD)]

# ------------------------------------------------------------------------------------------ watching reads

_opened: list[str] = []
_hooked = False
_WATCHING = False
_IGNORED = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix, "/proc", "/sys", "/dev", "/usr/lib", "/usr/share", "/etc/localtime"})


def _audit(event: str, args: tuple) -> None:
    if not _WATCHING:
        return
    if event in ("open", "os.scandir", "os.listdir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))



def watch_reads(on: bool) -> None:
    """Record every path opened in this process (all threads) while on: audit hooks cannot be removed, so one is added once."""
    global _hooked, _WATCHING
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True
    if on:
        _opened.clear()
    _WATCHING = on


def outside(root: Path) -> list[str]:
    """Paths opened since ``watch_reads(True)`` that resolve outside ``root`` (the interpreter's own files aside)."""
    root = root.resolve()
    bad = []
    for p in _opened:
        if not os.path.isabs(p) or p.startswith(_IGNORED):
            continue
        try:
            Path(p).resolve().relative_to(root)
        except (ValueError, OSError, RuntimeError):
            bad.append(p)
    return bad


# ------------------------------------------------------------------------------------------ mutations

SIDE_NAMES = ["0000.jpg", "0000.txt", "0001.jpg", "0001.json", "a/b.jpg", "a/b.txt", "../up.jpg", "/abs.jpg", "C:x.jpg", "noext", ".hidden.jpg",
              "x.JPG", "x.jpg.txt", "y..jpg", "z.jpeg", "0000.webp", "é.jpg", "k" * 120 + ".jpg", "dir/", "0002.png"]
PATHS = ["imgs/0000.jpg", "imgs/0001.jpg", "../secret.jpg", "imgs/../../secret.jpg", "imgs/link.jpg", "imgs/missing.jpg", "", "imgs", "/etc/hostname",
         "C:\\x.jpg", "imgs/0000.jpg\x00", "imgs//0000.jpg", "./imgs/0002.jpg", "imgs/0000.jpg/", "~/x.jpg"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True), st.text(max_size=30), st.binary(max_size=30))
JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def mutate_bytes(data: bytes, draw) -> bytes:
    """Bit flips, truncation at any offset, inserted or zeroed bytes: what disks and transfers do."""
    if not data:
        return draw(st.binary(max_size=64))
    op = draw(st.sampled_from(["flip", "truncate", "insert", "zero", "flip+truncate"]))
    buf = bytearray(data)
    if "flip" in op:
        for pos in draw(st.lists(st.integers(0, len(buf) - 1), min_size=1, max_size=16)):
            buf[pos] ^= 1 << draw(st.integers(0, 7))
    if "truncate" in op:
        buf = buf[: draw(st.integers(0, len(buf) - 1))]
    if op == "insert":
        at = draw(st.integers(0, len(buf)))
        buf[at:at] = draw(st.binary(min_size=1, max_size=600))
    if op == "zero":
        at = draw(st.integers(0, len(buf) - 1))
        buf[at: at + draw(st.integers(1, 1024))] = b"\0" * min(1024, len(buf) - at)
    return bytes(buf)


def _tar(members: list[tuple[str, bytes | None, str]]) -> bytes:
    """Members as (name, data, kind): kind 'file', 'dir', 'symlink' (to the decoy) or 'hardlink'."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data or b"")
                tf.addfile(info, io.BytesIO(data or b""))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
            info.linkname = "../../secret.jpg" if kind == "symlink" else "0000.jpg"
            tf.addfile(info)
    return out.getvalue()


def _patch_size(data: bytes, draw) -> bytes:
    """Rewrite one member header's size field (octal at 124..136), checksum recomputed or not."""
    headers = [i for i in range(0, len(data) - 512, 512) if data[i + 257: i + 262] == b"ustar"]
    if not headers:
        return data
    at = draw(st.sampled_from(headers))
    buf = bytearray(data)
    size = draw(st.integers(0, 2**33 - 1))
    buf[at + 124: at + 136] = f"{size:011o}\0".encode()
    if draw(st.booleans()):
        buf[at + 148: at + 156] = b" " * 8
        buf[at + 148: at + 156] = f"{sum(buf[at: at + 512]):06o}\0 ".encode()
    return bytes(buf)


def tar_members(draw, img2dataset: bool) -> list[tuple[str, bytes | None, str]]:
    members: list[tuple[str, bytes | None, str]] = []
    for i, image in enumerate(IMAGES):
        members.append((f"{i:04d}.jpg", image, "file"))
        members.append((f"{i:04d}.txt", f"a texture number {i}".encode(), "file"))
        if img2dataset:
            members.append((f"{i:04d}.json", json.dumps({"key": f"{i:04d}", "status": "success", "url": f"http://x/{i}.jpg"}).encode(), "file"))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["rename", "drop", "duplicate", "swap", "garble", "add", "link", "json"]))
        if not members and op != "add":
            continue
        i = draw(st.integers(0, max(0, len(members) - 1)))
        if op == "rename":
            members[i] = (draw(st.sampled_from(SIDE_NAMES) | st.text(min_size=1, max_size=40)), members[i][1], members[i][2])
        elif op == "drop":
            members.pop(i)
        elif op == "duplicate":
            members.insert(draw(st.integers(0, len(members))), members[i])
        elif op == "swap":
            j = draw(st.integers(0, len(members) - 1))
            members[i], members[j] = (members[i][0], members[j][1], members[j][2]), (members[j][0], members[i][1], members[i][2])
        elif op == "garble" and members[i][1] is not None:
            members[i] = (members[i][0], mutate_bytes(members[i][1] or b"", draw), "file")
        elif op == "add":
            members.append((draw(st.sampled_from(SIDE_NAMES)), draw(st.binary(max_size=200)), "file"))
        elif op == "link":
            members.append((draw(st.sampled_from(SIDE_NAMES)), None, draw(st.sampled_from(["dir", "symlink", "hardlink"]))))
        elif op == "json":
            members.append((f"{i:04d}.json", json.dumps(draw(JSONISH)).encode(), "file"))
    return members


def sidecar_rows(draw) -> list[dict[str, Any]]:
    """img2dataset's url table: every key, its status and message; mutated rows and types."""
    rows: list[dict[str, Any]] = [{"key": f"{i:04d}", "status": "success", "error_message": None, "url": f"http://x/{i}.jpg", "caption": f"a texture number {i}"}
                                  for i in range(N_GOOD)]
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["failed", "extra", "drop", "nullkey", "dupe"]))
        i = draw(st.integers(0, len(rows) - 1)) if rows else 0
        if op == "failed" and rows:
            rows[i] = {**rows[i], "status": draw(st.sampled_from(["failed_to_download", "failed_to_resize", "", "success"])), "error_message": draw(st.text(max_size=30))}
        elif op == "extra":
            rows.append({"key": draw(st.text(max_size=8)), "status": draw(st.sampled_from(["success", "failed_to_download"])), "error_message": None,
                         "url": draw(st.text(max_size=20)), "caption": draw(st.text(max_size=20))})
        elif op == "drop" and rows:
            rows.pop(i)
        elif op == "nullkey" and rows:
            rows[i] = {**rows[i], "key": None}
        elif op == "dupe" and rows:
            rows.append(dict(rows[i]))
    return rows


def write_sidecar(path: Path, rows: list[dict[str, Any]], draw) -> None:
    schema = pa.schema([("key", pa.string()), ("status", pa.string()), ("error_message", pa.string()), ("url", pa.string()), ("caption", pa.string())])
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    data = buf.getvalue()
    path.write_bytes(mutate_bytes(data, draw) if draw(st.integers(0, 4)) == 0 else data)


def manifest_rows(draw, images: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"key": f"{i:04d}", "image_path": f"{images.name}/{i:04d}.jpg", "caption": f"a texture number {i}"} for i in range(N_GOOD)]
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["path", "caption", "key", "drop", "extra", "column"]))
        i = draw(st.integers(0, len(rows) - 1)) if rows else 0
        if op == "path" and rows:
            rows[i] = {**rows[i], "image_path": draw(st.sampled_from(PATHS) | SCALARS)}
        elif op == "caption" and rows:
            rows[i] = {**rows[i], "caption": draw(SCALARS | JSONISH)}
        elif op == "key" and rows:
            rows[i] = {**rows[i], "key": draw(SCALARS)}
        elif op == "drop" and rows:
            rows.pop(i)
        elif op == "extra":
            rows.append(draw(st.dictionaries(st.sampled_from(["key", "image_path", "image", "path", "caption", "text", "url", "x"]), SCALARS | st.sampled_from(PATHS), max_size=4)))
        elif op == "column" and rows:
            rows[i] = {k: v for k, v in rows[i].items() if k != draw(st.sampled_from(list(rows[i]) or ["key"]))}
    return rows


def write_shard(fmt: str, crawl: Path, draw) -> Path:
    """One mutated shard of ``fmt`` in ``crawl``; returns its path (what discover_shards would list)."""
    images = crawl / "imgs"
    images.mkdir()
    for i, image in enumerate(IMAGES):
        (images / f"{i:04d}.jpg").write_bytes(image)
    os.symlink(crawl.parent / "secret.jpg", images / "link.jpg")  # a link inside the crawl that points outside it
    if fmt in ("webdataset", "img2dataset_tar"):
        path = crawl / "shard.tar"
        data = _tar(tar_members(draw, fmt == "img2dataset_tar"))
        how = draw(st.sampled_from(["as is", "bytes", "size"]))
        path.write_bytes(mutate_bytes(data, draw) if how == "bytes" else _patch_size(data, draw) if how == "size" else data)
        if fmt == "img2dataset_tar":
            write_sidecar(crawl / "shard.parquet", sidecar_rows(draw), draw)
        return path
    if fmt == "img2dataset_folder":
        path = crawl / "00000"
        path.mkdir()
        for name, data, kind in tar_members(draw, True):
            target = path / name
            if name.endswith("/") or ".." in name or name.startswith("/") or "\0" in name or len(name.encode()) > 200:
                continue  # a folder cannot hold these names; the tar formats try them
            try:  # a name taken by an earlier member (as a file, a folder or a link) keeps the first
                target.parent.mkdir(parents=True, exist_ok=True)
                if kind == "symlink":
                    os.symlink(crawl.parent / "secret.jpg", target)
                elif kind == "dir":
                    target.mkdir()
                elif not os.path.lexists(target):
                    target.write_bytes(data or b"")
            except OSError:
                continue
        write_sidecar(crawl / "00000.parquet", sidecar_rows(draw), draw)
        return path
    if fmt == "img2dataset_parquet":
        rows = [{"key": f"{i:04d}", "status": "success", "error_message": None, "caption": f"a texture number {i}", "jpg": image} for i, image in enumerate(IMAGES)]
        for _ in range(draw(st.integers(0, 4))):
            i = draw(st.integers(0, len(rows) - 1))
            field = draw(st.sampled_from(["key", "status", "caption", "jpg"]))
            value = {"key": st.none() | st.text(max_size=6) | st.sampled_from(["0000", "0001"]), "status": st.sampled_from(["success", "failed_to_download", None]),
                     "caption": st.none() | st.text(max_size=20), "jpg": st.none() | st.binary(max_size=64) | st.just(mutate_bytes(IMAGES[0], draw))}[field]
            rows[i] = {**rows[i], field: draw(value)}
        schema = pa.schema([("key", pa.string()), ("status", pa.string()), ("error_message", pa.string()), ("caption", pa.string()), ("jpg", pa.binary())])
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf, row_group_size=2)
        path = crawl / "shard.parquet"
        path.write_bytes(mutate_bytes(buf.getvalue(), draw) if draw(st.booleans()) else buf.getvalue())
        return path
    rows = manifest_rows(draw, images)
    if fmt == "manifest_jsonl":
        path = crawl / "shard.jsonl"
        lines = [json.dumps(r, default=lambda v: v.decode("latin-1") if isinstance(v, bytes) else str(v)).encode() for r in rows]
        lines += [draw(st.binary(max_size=40)) for _ in range(draw(st.integers(0, 2)))]
        data = b"\n".join(lines) + b"\n"
    elif fmt == "manifest_csv":
        path = crawl / "shard.csv"
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=sorted({k for r in rows for k in r}) or ["key"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{k: (v.decode("latin-1") if isinstance(v, bytes) else v) for k, v in r.items()} for r in rows])
        data = out.getvalue().encode("utf-8", "surrogateescape")
    else:
        path = crawl / "shard.parquet"
        buf = io.BytesIO()
        try:  # a column of one type per file, as parquet wants; mixed ones are written as text
            table = pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            table = pa.Table.from_pylist([{k: None if v is None else str(v) for k, v in r.items()} for r in rows])
        pq.write_table(table, buf)
        data = buf.getvalue()
    path.write_bytes(mutate_bytes(data, draw) if draw(st.integers(0, 3)) == 0 else data)
    return path


# ------------------------------------------------------------------------------------------ the property


def check_shard(path: Path, crawl: Path) -> tuple[int, int]:
    """Ingest one shard and assert the property; returns (pairs, quarantined)."""
    watch_reads(True)
    try:
        result = ingest_shard(path, path.name, limits=IngestLimits(workers=2))
    finally:
        watch_reads(False)
    assert outside(crawl) == [], f"read outside the crawl folder: {outside(crawl)}"
    pairs, q = result.pairs, result.quarantine
    assert result.seen == pairs.height + q.height
    assert q["reason"].null_count() == 0 and all(REASON.match(r) for r in q["reason"]), q["reason"].to_list()
    assert q["message"].null_count() == 0 and q["shard"].to_list() == [path.name] * q.height
    assert pairs["uid"].is_unique().all() and pairs["key"].null_count() == 0 and (pairs["caption"].str.len_chars() > 0).all()
    for row in pairs.select("container", "image_path", "image_member", "image_offset", "image_length", "sha256").iter_rows():
        Path(row[1]).resolve().relative_to(crawl.resolve())  # every pointer stays inside the crawl
        assert inspect_image(read_image_bytes(*row[:5])).sha256 == row[5]  # and reads back the bytes that were hashed
    return pairs.height, q.height


class Tally:
    """What a fuzz run tried: examples per format, and how many came out with pairs / quarantine rows."""

    def __init__(self) -> None:
        self.examples: dict[str, int] = {}
        self.pairs: dict[str, int] = {}
        self.quarantined: dict[str, int] = {}


def fuzz(fmt: str, examples: int, derandomize: bool = True, tally: Tally | None = None) -> int:
    """Run the property over ``examples`` mutated shards of ``fmt``; returns how many were tried."""
    tally = tally or Tally()

    @settings(max_examples=examples, deadline=None, derandomize=derandomize, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(st.data())
    def run(data) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "secret.jpg").write_bytes(noise_image(99, size=(40, 40)))  # the decoy nothing may read
            crawl = root / "crawl"
            crawl.mkdir()
            path = write_shard(fmt, crawl, data.draw)
            pairs, quarantined = check_shard(path, crawl)
        tally.examples[fmt] = tally.examples.get(fmt, 0) + 1
        tally.pairs[fmt] = tally.pairs.get(fmt, 0) + (pairs > 0)
        tally.quarantined[fmt] = tally.quarantined.get(fmt, 0) + (quarantined > 0)

    run()
    return tally.examples.get(fmt, 0)
