"""A web crawl of the world: shards in every input format, web noise at set rates, truth kept apart.

Each sample is a world scene (or, optionally, an out-of-domain photo) whose alt-text is what the web
would give it: the right caption, a lazy one, another image's, one with an attribute wrong, boilerplate,
a site's shared text; images repeat exactly or nearly. What every sample really is goes to a truth
table (``truth.parquet`` beside the crawl folder, never inside a shard), so no stage can read it and
every stage can be judged against it.
"""

from __future__ import annotations

import csv
import io
import json
import random
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageChops

from caption_assets.world.captions import BOILERPLATE, SEO, SITE_TEXTS, canonical, paraphrase, partial, wrong_attribute
from caption_assets.world.scene import Scene, encode, render, sample_scene, scene_rng

CRAWL = "crawl"  # the crawl's seed space: disjoint from the models' train and test splits
FORMATS = ("webdataset", "img2dataset_tar", "img2dataset_parquet", "manifest_csv", "manifest_jsonl")
EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
TRUTH_SCHEMA = {
    "uid": pl.String, "shard": pl.String, "key": pl.String, "noise": pl.String, "alt_text": pl.String, "clean_caption": pl.String,
    "objects": pl.List(pl.Struct({"shape": pl.String, "colour": pl.String, "size": pl.String, "position": pl.String})),
    "background": pl.String, "word": pl.String, "side": pl.Int32, "image_format": pl.String, "scene_id": pl.String,
    "duplicate_group": pl.String, "duplicate_of": pl.String, "wrong_kind": pl.String, "expected_quarantine": pl.String,
}


@dataclass(frozen=True)
class NoiseRates:
    """Fractions of the sampled pairs by what their alt-text (or image) is; normalised when drawn."""

    correct: float = 0.38  # a true paraphrase ("text_in_image" when the scene shows a word it names)
    partial: float = 0.10  # "red circle"
    misaligned: float = 0.10  # another scene's caption
    misaligned_web: float = 0.04  # a real web alt-text (LAION) with nothing to do with the image
    wrong_attribute: float = 0.10  # fluent, one colour or shape wrong: the hard negatives
    boilerplate: float = 0.06  # file names, "image", SEO keyword lists
    site_text: float = 0.06  # the same site text on many images
    exact_duplicate: float = 0.06  # an earlier image byte for byte, another caption
    near_duplicate: float = 0.08  # an earlier image re-encoded, resized, cropped or shifted
    ood_photo: float = 0.02  # a real photo with a human description (out of the world's domain)

    def kinds(self) -> tuple[list[str], list[float]]:
        d = asdict(self)
        return list(d), list(d.values())


@dataclass
class Sample:
    key: str
    image: bytes | None
    fmt: str
    caption: bytes | str | None
    url: str
    truth: dict = field(default_factory=dict)


@dataclass
class CrawlSpec:
    shards: list[tuple[str, str, int]]  # (file name, format, samples)
    seed: int = 0
    rates: NoiseRates = field(default_factory=NoiseRates)
    word_rate: float = 0.25
    broken: bool = True  # add the hostile members the quarantine knows
    web_texts: list[tuple[str, str]] = field(default_factory=list)  # (alt-text, url) for misaligned_web
    photos: dict[str, tuple[Image.Image, list[str]]] = field(default_factory=dict)  # name -> (photo, descriptions)
    wide: bool = False  # draw the wide world's scenes (objects 0.1-0.75 of the frame; ``sample_scene(wide=True)``)


def near_duplicate(rng: random.Random, im: Image.Image) -> tuple[Image.Image, str, int]:
    """A re-encode, resize, crop or small shift of ``im``: (image, how, JPEG quality)."""
    how = rng.choice(["reencode", "resize", "crop", "shift"])
    w, h = im.size
    if how == "resize":
        f = rng.uniform(0.6, 0.9)
        im = im.resize((max(32, int(w * f)), max(32, int(h * f))), Image.Resampling.BICUBIC)
    elif how == "crop":
        m = int(min(w, h) * rng.uniform(0.02, 0.05))
        im = im.crop((m, m, w - m, h - m))
    elif how == "shift":
        dx, dy = int(w * rng.uniform(-0.04, 0.04)), int(h * rng.uniform(-0.04, 0.04))
        im = ImageChops.offset(im, dx, dy)
    return im, how, rng.randint(55, 80)


class CrawlWriter:
    """Draws samples (deterministically, in shard order) and records their truth."""

    def __init__(self, spec: CrawlSpec):
        self.spec = spec
        self.rng = random.Random(f"crawl-noise:{spec.seed}")
        self.index = 0
        self.originals: list[tuple[str, Scene, bytes, str]] = []  # (uid, scene, bytes, fmt) that may be duplicated
        self.truth: list[dict] = []
        self.by_uid: dict[str, dict] = {}
        self.site_text = self.rng.choice(SITE_TEXTS)

    def _scene(self) -> tuple[str, Scene]:
        self.index += 1
        sid = f"{CRAWL}:{self.spec.seed}:{self.index}"
        return sid, sample_scene(scene_rng(CRAWL, self.spec.seed, self.index), word_rate=self.spec.word_rate, wide=self.spec.wide)

    def draw(self, shard: str, key: str, fmt: str) -> Sample:
        rng = self.rng
        names, weights = self.spec.rates.kinds()
        kind = rng.choices(names, weights)[0]
        if kind in ("exact_duplicate", "near_duplicate") and not self.originals:
            kind = "correct"
        if kind == "misaligned_web" and not self.spec.web_texts:
            kind = "misaligned"
        if kind == "ood_photo" and not self.spec.photos:
            kind = "correct"
        uid = f"{shard}::{key}"
        row = {"uid": uid, "shard": shard, "key": key, "noise": kind}
        if kind == "ood_photo":
            name = rng.choice(sorted(self.spec.photos))
            photo, texts = self.spec.photos[name]
            side = rng.randrange(224, 385, 8)
            im = photo.resize((side, side), Image.Resampling.BICUBIC)
            caption = rng.choice(texts)
            data = encode(im, fmt)
            row.update(alt_text=caption, clean_caption=caption, objects=[], side=side, scene_id=f"photo:{name}:{self.index}")
            self.index += 1
            return self._done(row, Sample(key, data, fmt, caption, f"https://photos.example.org/{name}/{self.index}.jpg"), fmt)
        if kind in ("exact_duplicate", "near_duplicate"):
            orig_uid, scene, orig_bytes, orig_fmt = rng.choice(self.originals)
            original = self.by_uid[orig_uid]
            sid = original["scene_id"]
            if kind == "exact_duplicate":
                data, fmt = orig_bytes, orig_fmt
            else:
                with Image.open(io.BytesIO(orig_bytes)) as src:
                    im, how, q = near_duplicate(rng, src.convert("RGB"))
                data, fmt = encode(im, "JPEG", q), "JPEG"
                row["wrong_kind"] = how
            caption = paraphrase(scene, rng)
            row.update(duplicate_of=orig_uid, scene_id=sid, side=Image.open(io.BytesIO(data)).size[0])
            original["duplicate_group"] = row["duplicate_group"] = sid  # the original joins the group too
        else:
            sid, scene = self._scene()
            data = encode(render(scene), fmt, quality=rng.randint(75, 95))
            row.update(scene_id=sid, side=scene.side)
            if kind == "correct":
                caption = paraphrase(scene, rng)
                if scene.word:
                    kind = row["noise"] = "text_in_image"
            elif kind == "partial":
                caption = partial(scene, rng)
            elif kind == "misaligned":
                caption = paraphrase(sample_scene(random.Random(rng.random())), rng)
            elif kind == "misaligned_web":
                caption = rng.choice(self.spec.web_texts)[0]
            elif kind == "wrong_attribute":
                caption, _, row["wrong_kind"] = wrong_attribute(scene, rng)
            elif kind == "boilerplate":
                caption = rng.choice(BOILERPLATE + SEO).format(n=rng.randint(1000, 9999))
            else:  # site_text
                caption = self.site_text
            self.originals.append((uid, scene, data, fmt))
        row.update(alt_text=caption, clean_caption=canonical(scene), objects=[asdict(o) for o in scene.ordered()], background=scene.background, word=scene.word)
        url = f"https://shop{rng.randint(1, 40)}.example.com/img/{rng.getrandbits(40):010x}.{EXT[fmt]}"
        if kind == "misaligned_web":
            url = next(u for t, u in self.spec.web_texts if t == caption)
        return self._done(row, Sample(key, data, fmt, caption, url), fmt)

    def _done(self, row: dict, sample: Sample, fmt: str) -> Sample:
        row["image_format"] = fmt
        self.truth.append(row)
        self.by_uid[row["uid"]] = row
        sample.truth = row
        return sample

    def broken(self, shard: str, key: str, reason: str, note: str) -> None:
        self.truth.append({"uid": f"{shard}::{key}", "shard": shard, "key": key, "noise": "broken", "expected_quarantine": reason, "alt_text": note})

    def truth_frame(self) -> pl.DataFrame:
        rows = [{k: r.get(k) for k in TRUTH_SCHEMA} for r in self.truth]
        return pl.DataFrame(rows, schema=TRUTH_SCHEMA)


# ------------------------------------------------------------------------------------------------ writers


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
    tf.addfile(info, io.BytesIO(data))


def _fmt(rng: random.Random) -> str:
    return rng.choices(["JPEG", "PNG", "WEBP"], [0.7, 0.15, 0.15])[0]


def _good_jpeg(w: CrawlWriter) -> bytes:
    return encode(render(sample_scene(random.Random(f"broken:{w.spec.seed}"))), "JPEG")


def write_tar_shard(path: Path, w: CrawlWriter, n: int, img2dataset: bool) -> None:
    shard = path.name
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(n):
            s = w.draw(shard, f"{i:06d}", _fmt(w.rng))
            meta = {"url": s.url, "key": s.key}
            if img2dataset:
                meta.update({"caption": s.caption, "status": "success", "error_message": None, "width": None, "height": None})
            _add(tf, f"{s.key}.{EXT[s.fmt]}", s.image or b"")
            if not img2dataset or i % 2:
                _add(tf, f"{s.key}.txt", str(s.caption).encode())
            _add(tf, f"{s.key}.json", json.dumps(meta).encode())
        if w.spec.broken:
            good = _good_jpeg(w)
            members = [
                ("900000", b"\xff\xd8\xff\xe0" + bytes(w.rng.getrandbits(8) for _ in range(600)), b"a corrupt jpeg", "corrupt_image"),
                ("900001", good[: len(good) // 2], b"a truncated jpeg", "truncated_image"),
                ("900002", good, "caf\xe9 au lait in a white cup".encode("latin-1"), "caption_not_utf8"),
                ("900003", good, b"   ", "empty_caption"),
                ("900004", good, None, "missing_caption"),
                ("900005", None, b"a caption whose image never arrived", "missing_image"),
            ]
            for key, image, caption, reason in members:
                if image is not None:
                    _add(tf, f"{key}.jpg", image)
                if caption is not None:
                    _add(tf, f"{key}.txt", caption)
                w.broken(shard, key, reason, caption.decode("latin-1") if caption else "")


def write_parquet_shard(path: Path, w: CrawlWriter, n: int) -> None:
    shard, rows = path.name, []
    for i in range(n):
        s = w.draw(shard, f"{i:09d}", "JPEG")
        rows.append({"key": s.key, "url": s.url, "caption": s.caption, "status": "success", "error_message": None, "jpg": s.image})
    if w.spec.broken:
        rows.append({"key": f"{n:09d}", "url": "http://example.com/gone.jpg", "caption": "a picture that failed to download", "status": "failed_to_download", "error_message": "HTTP 404", "jpg": None})
        rows.append({"key": f"{n + 1:09d}", "url": "http://example.com/text.jpg", "caption": "a member that is text, not an image", "status": "success", "error_message": None, "jpg": b"<html>not an image</html>"})
        w.broken(shard, f"{n:09d}", "download_failed", "a picture that failed to download")
        w.broken(shard, f"{n + 1:09d}", "not_an_image", "a member that is text, not an image")
    schema = pa.schema([("key", pa.string()), ("url", pa.string()), ("caption", pa.string()), ("status", pa.string()), ("error_message", pa.string()), ("jpg", pa.binary())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=32)


def write_manifest_shard(path: Path, w: CrawlWriter, n: int) -> None:
    folder = path.parent / f"images-{path.stem.split('-')[-1]}"
    folder.mkdir(parents=True, exist_ok=True)
    shard, rows = path.name, []
    for i in range(n):
        s = w.draw(shard, f"{path.stem}-{i:04d}", "JPEG")
        name = f"{path.stem}_{i:04d}.jpg"
        (folder / name).write_bytes(s.image or b"")
        rows.append({"key": s.key, "image_path": f"{folder.name}/{name}", "caption": s.caption, "url": s.url})
    if w.spec.broken:
        (folder / "empty.jpg").write_bytes(b"")
        rows.append({"key": f"{path.stem}-empty", "image_path": f"{folder.name}/empty.jpg", "caption": "a zero byte file", "url": ""})
        rows.append({"key": f"{path.stem}-missing", "image_path": f"{folder.name}/does_not_exist.jpg", "caption": "a file that is not there", "url": ""})
        w.broken(shard, f"{path.stem}-empty", "empty_image", "a zero byte file")
        w.broken(shard, f"{path.stem}-missing", "missing_image_file", "a file that is not there")
    if path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["key", "image_path", "caption", "url"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


WRITERS: dict[str, Callable[[Path, CrawlWriter, int], None]] = {
    "webdataset": lambda p, w, n: write_tar_shard(p, w, n, img2dataset=False),
    "img2dataset_tar": lambda p, w, n: write_tar_shard(p, w, n, img2dataset=True),
    "img2dataset_parquet": write_parquet_shard,
    "manifest_csv": write_manifest_shard,
    "manifest_jsonl": write_manifest_shard,
}
SUFFIX = {"webdataset": ".tar", "img2dataset_tar": ".tar", "img2dataset_parquet": ".parquet", "manifest_csv": ".csv", "manifest_jsonl": ".jsonl"}


def shard_plan(n_shards: int, per_shard: int, formats: tuple[str, ...] = FORMATS) -> list[tuple[str, str, int]]:
    """``n_shards`` shards cycling through ``formats``: (file name, format, samples)."""
    return [(f"{formats[i % len(formats)].split('_')[0]}-{i:05d}{SUFFIX[formats[i % len(formats)]]}", formats[i % len(formats)], per_shard) for i in range(n_shards)]


def write_crawl(out: Path, spec: CrawlSpec) -> tuple[Path, pl.DataFrame]:
    """Write ``out/crawl/<shards>`` and ``out/truth.parquet``; returns (crawl folder, truth)."""
    crawl = out / "crawl"
    crawl.mkdir(parents=True, exist_ok=True)
    w = CrawlWriter(spec)
    for name, fmt, n in spec.shards:
        WRITERS[fmt](crawl / name, w, n)
    truth = w.truth_frame()
    truth.write_parquet(out / "truth.parquet")
    return crawl, truth


def preferences(truth: pl.DataFrame, fraction: float, seed: int = 0) -> Iterator[dict]:
    """Preference records from the truth: for a sample of clean pairs, the true caption beats the
    one-attribute-wrong, partial and misaligned captions of the same image (Compress & Align's referee)."""
    from caption_assets.world.scene import SceneObject

    rng = random.Random(f"preferences:{seed}")
    clean = truth.filter(pl.col("noise").is_in(["correct", "text_in_image"]) & pl.col("objects").list.len().gt(0))
    others = truth.filter(pl.col("objects").list.len().gt(0))["clean_caption"].to_list()
    for row in clean.iter_rows(named=True):
        if rng.random() >= fraction:
            continue
        scene = Scene(tuple(SceneObject(**o) for o in row["objects"]), row["background"], False, row["side"], row["word"])
        worse = [wrong_attribute(scene, rng)[0], partial(scene, rng), rng.choice([c for c in others if c != row["clean_caption"]])]
        captions = [row["clean_caption"], *worse]
        order = list(range(len(captions)))
        rng.shuffle(order)
        best = order.index(0)
        yield {"image_key": row["uid"], "captions": [captions[i] for i in order], "preferred": best, "criteria": {"accuracy": best, "completeness": best}}
