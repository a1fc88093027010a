"""Builders for test shards: real images, tars, parquet and manifests made on the fly."""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def image_bytes(size: tuple[int, int] = (256, 256), colour: tuple[int, int, int] = (200, 30, 30), fmt: str = "JPEG", seed: int = 0) -> bytes:
    """A real, decodable image; ``seed`` draws a stripe so images with one colour still differ."""
    im = Image.new("RGB", size, colour)
    if seed:
        for x in range(0, size[0], max(1, size[0] // 16)):
            im.paste((seed * 37 % 256, seed * 91 % 256, seed * 13 % 256), (x, seed % size[1], x + 2, seed % size[1] + 8))
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid PNG header declaring width x height single-colour pixels, a few hundred bytes long."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    row = b"\0" * (width + 1)
    comp = zlib.compressobj(9)
    idat = comp.compress(row * 16) + comp.flush()  # only the first rows: the header is what matters
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def write_tar(path: Path, members: Iterable[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def wds_members(n: int, start: int = 0, prefix: str = "") -> list[tuple[str, bytes]]:
    """n good WebDataset samples with distinct images and captions."""
    out = []
    for i in range(start, start + n):
        out.append((f"{prefix}{i:05d}.jpg", noise_image(i + 1)))
        out.append((f"{prefix}{i:05d}.txt", f"a red square number {i} on a plain background".encode()))
    return out


def write_parquet(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=4)
    return path


def noise_image(seed: int, size: tuple[int, int] = (256, 256), fmt: str = "JPEG") -> bytes:
    """A smooth random texture: images that differ in content, not only in a stripe."""
    import numpy as np

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format=fmt, quality=90)
    return buf.getvalue()
