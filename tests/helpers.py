"""Builders for test shards: real images, tars, parquet and manifests made on the fly."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import requests
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


def hostile_crawl(root: Path) -> list[tuple[str, str | None, str | None]]:
    """Every kind of bad input, spread over shards of every format, beside good samples.

    Returns what was planted, one ``(shard, key, reason)`` per record: ``reason`` None for a good
    sample, ``key`` None for a shard-level failure (a cut tar, a shard or sidecar that does not read),
    whose quarantine row has no key.
    """
    good = image_bytes(seed=5)
    png_good, webp_good = image_bytes(fmt="PNG", seed=6), image_bytes(fmt="WEBP", seed=7)
    planted: list[tuple[str, str | None, str | None]] = []
    a_bad = [
        ("c1", [("c1.jpg", good[:20] + b"\0" * 200 + good[220:]), ("c1.txt", b"corrupt jpeg body")], "corrupt_image"),
        ("c2", [("c2.png", png_good[:30] + b"garbage" * 20), ("c2.txt", b"corrupt png")], "corrupt_image"),
        ("c3", [("c3.webp", webp_good[:16] + b"\0" * 64), ("c3.txt", b"corrupt webp")], "corrupt_image"),
        ("t1", [("t1.jpg", good[: len(good) // 3]), ("t1.txt", b"truncated")], "truncated_image"),
        ("b1", [("b1.png", png_bomb()), ("b1.txt", b"bomb")], "decompression_bomb"),
        ("z1", [("z1.jpg", b""), ("z1.txt", b"zero")], "empty_image"),
        ("x1", [("x1.jpg", b"plain text where an image should be"), ("x1.txt", b"text member")], "not_an_image"),
        ("n1", [("n1.jpg", good)], "missing_caption"),
        ("n2", [("n2.txt", b"caption without image")], "missing_image"),
        ("u1", [("u1.jpg", good), ("u1.txt", b"\xff\xfe latin \xe9")], "caption_not_utf8"),
        ("l1", [("l1.jpg", good), ("l1.txt", b"long " * 200_000)], "caption_too_long"),
        ("h1", [("h1.jpg", noise_image(11)), ("h1.txt", "<p>Caf\u00c3\u00a9 &amp; bar</p>".encode())], None),
        ("00001", [("00001.jpg", good), ("00001.txt", b"dup key in shard")], "duplicate_key"),
        (None, [("/etc/evil.jpg", good)], "unsafe_path"),
        (None, [("../../escape.txt", b"x")], "unsafe_path"),
    ]
    write_tar(root / "a.tar", wds_members(4) + [m for _, members, _ in a_bad for m in members])
    planted += [("a.tar", f"{i:05d}", None) for i in range(4)] + [("a.tar", key, reason) for key, _, reason in a_bad]
    write_tar(root / "b.tar", wds_members(3))  # the same keys as a.tar: fine across shards (uids are shard-scoped)
    planted += [("b.tar", f"{i:05d}", None) for i in range(3)]
    data = (root / "b.tar").read_bytes()
    (root / "cut.tar").write_bytes(data[: len(data) // 2])  # cut inside the second sample: the first one survives
    planted += [("cut.tar", "00000", None), ("cut.tar", None, "truncated_tar")]
    (root / "empty.tar").write_bytes(b"")
    (root / "garbage.tar").write_bytes(b"this is not a tar archive at all " * 40)
    planted.append(("garbage.tar", None, "unreadable_shard"))
    (root / "broken.parquet").write_bytes(b"PAR1 but nothing else")
    planted.append(("broken.parquet", None, "unreadable_shard"))
    write_tar(root / "side.tar", wds_members(2, start=20))  # img2dataset layout whose sidecar parquet does not read
    (root / "side.parquet").write_bytes(b"PAR1\0\0\0\0 cut short")
    planted += [("side.tar", f"{i:05d}", None) for i in (20, 21)] + [("side.tar", None, "unreadable_sidecar")]
    (root / "imgs").mkdir()
    (root / "imgs" / "ok.jpg").write_bytes(noise_image(12))
    write_parquet(root / "types.parquet", [{"image_path": "imgs/ok.jpg", "caption": 3, "key": "k1"}])
    planted.append(("types.parquet", "k1", "manifest_schema"))
    (root / "nocols.csv").write_text("file_name,words\nimgs/ok.jpg,hello\n")
    planted.append(("nocols.csv", "000000000", "manifest_schema"))
    (root / "missing.jsonl").write_text(json.dumps({"image_path": "imgs/gone.jpg", "caption": "gone"}) + "\n" + json.dumps({"image_path": "imgs/ok.jpg", "caption": "a fine texture"}) + "\n")
    planted += [("missing.jsonl", "gone", "missing_image_file"), ("missing.jsonl", "ok", None)]
    return planted


def tiny_chat_model(path: Path, words: str = "a fused caption of the tower at night merge sentence") -> Path:
    """A random-weight Llama chat model (word-level tokenizer, chat template) saved the way real checkpoints are, so
    ``AutoModelForCausalLM`` / ``AutoTokenizer`` and ``transformers serve`` load it as they would a hub model."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([words], trainers.WordLevelTrainer(special_tokens=["[PAD]", "[BOS]", "[EOS]", "[UNK]"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]")
    tokenizer.chat_template = "{% for m in messages %}[BOS] {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}[BOS]{% endif %}"
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``transformers serve <folder>`` on loopback, started and stopped by the test."""

    def __init__(self, model: Path, port: int, log: Path):
        self.model, self.port, self.log = model, port, log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 240.0) -> None:
        cli = Path(sys.executable).parent / "transformers"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(cli), "serve", str(self.model), "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu"],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/health", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TimeoutError(self.log.read_text()[-2000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
