"""Stream the samples of one shard as ``Record``s, whatever the shard's format.

Readers never raise on bad content: a sample they cannot make sense of comes out as a ``Record``
with ``problem`` set (reason code, human message), so every sample seen is accounted for. Image
bytes stay inside the shard: each record carries an ``ImageRef`` pointing at them.
"""

from __future__ import annotations

import csv
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from caption_assets.shards import CAPTION_COLUMNS, IMAGE_BYTES_COLUMNS, IMAGE_PATH_COLUMNS, ShardKind, binary_columns, shard_kind, sidecars

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
PARQUET_BATCH_ROWS = 256


class ImageRef(NamedTuple):
    """Where an image's bytes live: a tar member (offset/length), a parquet cell (row), or a file."""

    container: str  # "tar" | "parquet" | "file"
    path: str
    member: str | None
    offset: int
    length: int


@dataclass(slots=True)
class Record:
    key: str | None
    member: str
    ref: ImageRef | None = None
    image: bytes | None = None
    caption: bytes | str | None = None
    url: str | None = None
    meta: dict[str, Any] | None = None
    problem: tuple[str, str] | None = None


def iter_records(path: Path) -> Iterator[Record]:
    """All records of one shard, in shard order; then the url rows of its sidecar that have no sample."""
    path = Path(path)
    kind = shard_kind(path)
    if kind is ShardKind.TAR:
        records = iter_tar(path)
    elif kind is ShardKind.FOLDER:
        records = iter_folder(path)
    elif kind is ShardKind.IMG2DATASET_PARQUET:
        records = iter_img2dataset_parquet(path)
    else:
        records = iter_manifest(path)
    sidecar = sidecars(path).parquet
    yield from with_sidecar(records, sidecar) if sidecar is not None else records


def failed_download(status: object, error: object) -> tuple[str, str]:
    return "download_failed", f"img2dataset status {status!r}: {error}"


def with_sidecar(records: Iterator[Record], sidecar: Path) -> Iterator[Record]:
    """img2dataset writes only successful samples into a tar or folder; its same-stem parquet lists every url.

    A url row with no sample in the shard becomes a record of its own: ``download_failed`` with
    img2dataset's message, or ``missing_image`` when the row says success but the sample is absent.
    So a shard reconciles as url rows = raw pairs + quarantined.
    """
    keys: set[str] = set()
    for rec in records:
        if rec.key is not None:
            keys.add(rec.key)
        yield rec
    try:
        pf = pq.ParquetFile(sidecar)
        wanted = [c for c in ("key", "status", "error_message", "url", "caption") if c in pf.schema_arrow.names]
        rows = pf.read(columns=wanted).to_pylist()
    except Exception as exc:  # noqa: BLE001 - an unreadable sidecar is reported, the shard's samples still count
        yield Record(None, sidecar.name, problem=("unreadable_sidecar", f"img2dataset sidecar parquet does not read: {exc}"))
        return
    for i, row in enumerate(rows):
        key = _str_or_none(row.get("key"))
        if key is not None and key in keys:
            continue
        if key is not None:
            keys.add(key)
        member = f"{sidecar.name} row {i}"
        url, caption = _str_or_none(row.get("url")), row.get("caption")
        status = row.get("status", "success")
        if status != "success":
            yield Record(key, member, caption=caption, url=url, problem=failed_download(status, row.get("error_message")))
        else:
            yield Record(key, member, caption=caption, url=url,
                         problem=("missing_image", f"{sidecar.name} reports a successful download but the shard holds no sample {key!r}"))


# --------------------------------------------------------------------------- tar (WebDataset)


def split_key(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is the path up to the first dot of the file name."""
    p = PurePosixPath(name)
    stem, _, ext = p.name.partition(".")
    key = str(p.parent / stem) if str(p.parent) != "." else stem
    return key, ext.lower()


def is_unsafe_member(name: str) -> bool:
    return name.startswith(("/", "\\")) or ".." in PurePosixPath(name.replace("\\", "/")).parts or ":" in name[:3] or "\0" in name


def iter_tar(path: Path) -> Iterator[Record]:
    if path.stat().st_size == 0:
        return  # an empty shard holds no samples
    try:
        tf = tarfile.open(path, "r:")
    except (tarfile.TarError, OSError) as exc:
        yield Record(None, path.name, problem=("unreadable_shard", f"not a readable tar file: {exc}"))
        return
    seen: set[str] = set()
    group: list[Member] = []
    group_key: str | None = None
    resolved, shard_bytes = str(path.resolve()), path.stat().st_size
    with tf:
        while True:
            try:
                m = tf.next()
                if m is None:
                    break
                if m.isdir():
                    continue
                if is_unsafe_member(m.name):
                    yield Record(None, m.name, problem=("unsafe_path", "member path is absolute or climbs out with '..'"))
                    continue
                if not m.isfile():
                    yield Record(None, m.name, problem=("unsupported_member", "tar member is a link or device, not a file"))
                    continue
                key, ext = split_key(m.name)
                data = _member_bytes(tf, m, shard_bytes)
                member = Member(ext, m.name, data, ImageRef("tar", resolved, m.name, m.offset_data, m.size))
            except (tarfile.ReadError, EOFError, OSError) as exc:
                if group:
                    yield _sample(group_key, group, seen)
                    group = []
                yield Record(None, f"{path.name}@{tf.offset}", problem=("truncated_tar", f"tar ends early: {exc}"))
                return
            # a new key, or an extension the current sample already has, starts the next sample
            if group and (key != group_key or any(g.ext == ext for g in group)):
                yield _sample(group_key, group, seen)
                group = []
            group_key = key
            group.append(member)
        if group:
            yield _sample(group_key, group, seen)
        tail = _nonzero_tail(path, tf.offset)
        if tail:
            yield Record(None, f"{path.name}@{tf.offset}", problem=("truncated_tar", f"{tail} trailing bytes do not form a tar header"))


def _member_bytes(tf: tarfile.TarFile, m: tarfile.TarInfo, shard_bytes: int) -> bytes:
    """A regular member's bytes by seek+read (cheaper than extractfile); short read = truncated tar.

    A header may claim any size: one that runs past the end of the shard is a truncated tar, found
    before ``read`` would allocate the claimed size (gigabytes, from a kilobyte of corrupt header)."""
    f = tf.fileobj
    assert f is not None
    if m.offset_data + m.size > shard_bytes:
        raise tarfile.ReadError(f"member {m.name!r} claims {m.size} bytes, past the end of the shard")
    f.seek(m.offset_data)
    data = f.read(m.size)
    if len(data) != m.size:
        raise tarfile.ReadError(f"unexpected end of data in {m.name!r}")
    return data


def _nonzero_tail(path: Path, offset: int) -> int:
    """tarfile stops quietly at a cut-off header; any non-zero bytes after the last member mean truncation."""
    with open(path, "rb") as f:
        f.seek(offset)
        rest = f.read()
    return len(rest) if rest.strip(b"\0") else 0


class Member(NamedTuple):
    """One file of a sample (a tar member or a file in a shard folder)."""

    ext: str
    name: str
    data: bytes
    ref: ImageRef


def _sample(key: str | None, group: list[Member], seen: set[str]) -> Record:
    """The files sharing one key (``.jpg`` + ``.txt`` + ``.json``) -> one record."""
    assert key is not None
    members = ",".join(m.name for m in group)
    if key in seen:
        return Record(key, members, problem=("duplicate_key", f"key {key!r} appears again later in the shard"))
    seen.add(key)
    by_ext = {m.ext: m for m in group}  # extensions are unique within a group
    meta: dict[str, Any] | None = None
    if "json" in by_ext:
        try:
            meta = json.loads(by_ext["json"].data.decode("utf-8"))
            if not isinstance(meta, dict):
                meta = {"_value": meta}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            meta = {"_error": f"unparseable json member: {exc}"}
    caption: bytes | str | None = by_ext["txt"].data if "txt" in by_ext else None
    if caption is None and meta and isinstance(meta.get("caption"), str):
        caption = meta["caption"]
    url = meta.get("url") if meta and isinstance(meta.get("url"), str) else None
    image_ext = next((e for e in IMAGE_EXTS if e in by_ext), None)
    if meta and meta.get("status") not in (None, "success"):
        return Record(key, members, url=url, meta=meta, problem=failed_download(meta.get("status"), meta.get("error_message")))
    if image_ext is None:
        found = ", ".join(sorted(by_ext)) or "nothing"
        return Record(key, members, caption=caption, url=url, meta=meta, problem=("missing_image", f"no .jpg/.png/.webp member for key (found {found})"))
    image = by_ext[image_ext]
    return Record(key, image.name, ref=image.ref, image=image.data, caption=caption, url=url, meta=meta)


# --------------------------------------------------------------------------- folder (img2dataset `files`)


def iter_folder(path: Path) -> Iterator[Record]:
    """A shard folder: files grouped by key (the name up to its first dot), in key order."""
    groups: dict[str, list[Member]] = {}
    with os.scandir(path) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_symlink() or not e.is_file():
            kind = "a link" if e.is_symlink() else "a folder or device"
            yield Record(None, e.name, problem=("unsupported_member", f"{e.name!r} in the shard folder is {kind}, not a file"))
            continue
        key, ext = split_key(e.name)
        try:
            data = Path(e.path).read_bytes()
        except OSError as exc:
            yield Record(key, e.name, problem=("unreadable_member", f"cannot read {e.name!r}: {exc}"))
            continue
        groups.setdefault(key, []).append(Member(ext, e.name, data, ImageRef("file", str(Path(e.path).resolve()), None, 0, len(data))))
    seen: set[str] = set()
    for key, group in groups.items():
        yield _sample(key, group, seen)


# --------------------------------------------------------------------------- img2dataset parquet


def iter_img2dataset_parquet(path: Path) -> Iterator[Record]:
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one quarantine row
        yield Record(None, path.name, problem=("unreadable_shard", f"not a readable parquet file: {exc}"))
        return
    names = pf.schema_arrow.names
    image_col = next((c for c in binary_columns(pf.schema_arrow) if c in IMAGE_BYTES_COLUMNS), None)
    path_col = next((c for c in IMAGE_PATH_COLUMNS if c in names and c != image_col), None)
    caption_col = next((c for c in CAPTION_COLUMNS if c in names), None)
    row = 0
    seen: set[str] = set()
    resolved, folder = str(path.resolve()), path.parent.resolve()
    batches = pf.iter_batches(batch_size=PARQUET_BATCH_ROWS)
    while True:
        try:  # a corrupt page fails here, rows into the file
            batch = next(batches, None)
        except Exception as exc:  # noqa: BLE001 - the rows read so far stand; the rest is one quarantine row
            yield Record(None, f"{path.name}@row {row}", problem=("unreadable_shard", f"rows from {row} on do not read: {exc}"))
            return
        if batch is None:
            break
        for r in _batch_rows(batch):
            member = f"row {row}"
            if isinstance(r, Exception):
                yield Record(None, member, problem=("unreadable_row", f"row {row} does not read: {r}"))
                row += 1
                continue
            key = (_str_or_none(r["key"]) if "key" in r else None) or f"{row:09d}"
            url, caption, status = _str_or_none(r.get("url")), r.get(caption_col) if caption_col else None, r.get("status", "success")
            meta = {c: r[c] for c in ("error_message", "width", "height", "original_width", "original_height", "exif") if c in r}
            rec: Record
            if key in seen:
                rec = Record(key, member, problem=("duplicate_key", f"key {key!r} appears again later in the shard"))
            elif status != "success":
                rec = Record(key, member, url=url, problem=failed_download(status, meta.get("error_message")))
            elif image_col is not None and r[image_col] is not None:
                data = r[image_col]
                rec = Record(key, member, ImageRef("parquet", resolved, image_col, row, len(data)), data, caption, url, meta)
            elif path_col is not None and r[path_col]:
                rec = _file_record(folder, key, str(r[path_col]), caption, url, meta)
            else:
                rec = Record(key, member, caption=caption, url=url, problem=("missing_image", "row has neither image bytes nor an image path"))
            if caption_col and not isinstance(caption, (str, bytes, type(None))):
                rec = Record(key, member, problem=("manifest_schema", f"caption column {caption_col!r} holds {type(caption).__name__}, not text"))
            seen.add(key)
            row += 1
            yield rec


def _batch_rows(batch: pa.RecordBatch) -> list[dict[str, Any] | Exception]:
    """A batch's rows as dicts; when the batch does not convert (text that is not UTF-8), row by row,
    so one bad cell costs its own row only."""
    try:
        return batch.to_pylist()
    except Exception:  # noqa: BLE001 - retried row by row below
        out: list[dict[str, Any] | Exception] = []
        for i in range(batch.num_rows):
            try:
                out.append(batch.slice(i, 1).to_pylist()[0])
            except Exception as exc:  # noqa: BLE001 - this row becomes its own quarantine row
                out.append(exc)
        return out


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


# --------------------------------------------------------------------------- manifest + image folder


def iter_manifest(path: Path) -> Iterator[Record]:
    try:
        rows = list(_manifest_rows(path))
    except Exception as exc:  # noqa: BLE001
        yield Record(None, path.name, problem=("unreadable_shard", f"cannot read manifest: {exc}"))
        return
    seen: set[str] = set()
    folder = path.parent.resolve()
    for i, row in enumerate(rows):
        member = f"line {i + 1}"
        if isinstance(row, Exception):
            yield Record(None, member, problem=("manifest_schema", f"unparseable manifest line: {row}"))
            continue
        image = next((row[c] for c in IMAGE_PATH_COLUMNS if row.get(c) not in (None, "")), None)
        caption_col = next((c for c in CAPTION_COLUMNS if c in row), None)
        caption = row.get(caption_col) if caption_col else None
        key = _str_or_none(row.get("key")) or (PurePosixPath(str(image)).stem if image else None) or f"{i:09d}"
        url = _str_or_none(row.get("url"))
        meta = {k: v for k, v in row.items() if k not in {*IMAGE_PATH_COLUMNS, *CAPTION_COLUMNS, "key", "url"}} or None
        if image is None:
            yield Record(key, member, caption=caption, problem=("manifest_schema", f"no image path column ({'/'.join(IMAGE_PATH_COLUMNS)}) in this row"))
        elif not isinstance(image, str):
            yield Record(key, member, problem=("manifest_schema", f"image path is {type(image).__name__}, not text"))
        elif caption is not None and not isinstance(caption, (str, bytes)):
            yield Record(key, member, problem=("manifest_schema", f"caption is {type(caption).__name__}, not text"))
        elif key in seen:
            yield Record(key, member, problem=("duplicate_key", f"key {key!r} appears again later in the manifest"))
        else:
            seen.add(key)
            yield _file_record(folder, key, image, caption, url, meta, member)


def _manifest_rows(path: Path) -> Iterator[dict[str, Any] | Exception]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from pq.read_table(path).to_pylist()
    elif suffix == ".csv":
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
            yield from csv.DictReader(f)
    else:
        with open(path, "rb") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    yield row if isinstance(row, dict) else ValueError("line is not a JSON object")
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    yield exc


def _file_record(base: Path, key: str, image: str, caption: Any, url: str | None, meta: dict[str, Any] | None, member: str | None = None) -> Record:
    """A record for an image file named relative to ``base`` (the shard's folder, already resolved)."""
    member = member or image
    if is_unsafe_member(image):
        return Record(key, member, problem=("unsafe_path", f"image path {image!r} is absolute or climbs out with '..'"))
    file = base / image
    try:
        resolved = file.resolve()
        if not resolved.is_relative_to(base):  # a link inside the crawl that points out of it
            return Record(key, member, problem=("unsafe_path", f"image path {image!r} resolves outside the shard's folder"))
        data = resolved.read_bytes()
    except FileNotFoundError:
        return Record(key, member, caption=caption, url=url, problem=("missing_image_file", f"manifest points at {image!r}, which does not exist"))
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        return Record(key, member, problem=("missing_image_file", f"cannot read {image!r}: {exc}"))
    return Record(key, member, ImageRef("file", str(resolved), None, 0, len(data)), data, caption, url, meta)


# --------------------------------------------------------------------------- reading bytes back


def read_image_bytes(container: str, path: str, member: str | None, offset: int, length: int) -> bytes:
    """Bytes of one image from its pointer, without re-reading the rest of the shard."""
    if container == "tar":
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)
    if container == "parquet":
        assert member is not None
        table, start = _parquet_row_group(path, member, offset)
        return table.column(0)[offset - start].as_py()
    with open(path, "rb") as f:
        return f.read()


@lru_cache(maxsize=4)
def _parquet_layout(path: str) -> tuple[int, ...]:
    md = pq.ParquetFile(path).metadata
    starts, n = [], 0
    for i in range(md.num_row_groups):
        starts.append(n)
        n += md.row_group(i).num_rows
    return tuple(starts)


@lru_cache(maxsize=2)
def _read_row_group(path: str, member: str, index: int) -> pa.Table:
    return pq.ParquetFile(path).read_row_group(index, columns=[member])


def _parquet_row_group(path: str, member: str, row: int) -> tuple[pa.Table, int]:
    starts = _parquet_layout(path)
    index = max(i for i, s in enumerate(starts) if s <= row)
    return _read_row_group(path, member, index), starts[index]

