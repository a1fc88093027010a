"""Build the committed sample crawl under ``data/sample/crawl`` (deterministic: same bytes every run).

Images are crops and variants of scikit-image's bundled sample photos (see data/README.md for their
sources and licences) plus drawn shapes; alt-texts are hand-written descriptions, real web alt-texts
from LAION (shared/data) playing the part of mismatched captions, and the usual boilerplate. A few
samples are deliberately broken so quarantine has something to do.

    python scripts/make_sample_data.py [--laion ../shared/data/laion_alt_texts_1000.parquet]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import shutil
import tarfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "sample" / "crawl"
ANNOTATIONS = ROOT / "data" / "annotations" / "preferences.jsonl"
DEFAULT_LAION = ROOT.parent / "shared" / "data" / "laion_alt_texts_1000.parquet"

# scikit-image sample photo -> plain descriptions of what is in it
PHOTOS = {
    "astronaut": ["an astronaut in a white spacesuit posing in front of a flag", "portrait of a smiling astronaut holding a helmet"],
    "chelsea": ["a tabby cat looking to the side", "close-up of an orange and grey striped cat"],
    "coffee": ["a cup of coffee on a saucer with a spoon", "a white coffee cup seen from above on a red table"],
    "rocket": ["a rocket standing on the launch pad", "a space rocket ready for launch under a blue sky"],
    "motorcycle_left": ["a motorcycle parked in a workshop", "a red sport motorbike in a garage"],
    "hubble_deep_field": ["a telescope image of many distant galaxies", "deep field view of galaxies in dark space"],
    "retina": ["a medical photograph of a human retina", "fundus image of an eye showing blood vessels"],
    "ihc": ["a microscope image of stained tissue", "purple and brown stained cells under a microscope"],
    "camera": ["a black and white photo of a man with a camera on a tripod", "photographer standing behind a tripod camera"],
    "moon": ["grayscale picture of the surface of the moon", "craters on the lunar surface"],
    "coins": ["old coins on a dark background", "a collection of round coins laid out in rows"],
    "page": ["a scanned page of printed text", "a page of a book with printed paragraphs"],
    "brick": ["a grey brick wall texture", "close-up of bricks and mortar"],
    "grass": ["close-up of green grass blades", "a patch of grass seen from above"],
    "gravel": ["a gravel texture with small stones", "small grey pebbles on the ground"],
}
SHAPES = ["circle", "square", "triangle"]
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (240, 210, 40), "purple": (140, 60, 170)}
BOILERPLATE = ["IMG_1234.jpg", "image", "photo", "DSC01234", "untitled", "thumbnail", "P1010023.JPG"]
REPEATED = "Click here to enlarge"


def load_photos() -> dict[str, Image.Image]:
    """scikit-image ships these files inside its wheel; no download involved."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    photos = {}
    for name in PHOTOS:
        file = next(folder.glob(f"{name}.*"))
        with Image.open(file) as im:
            photos[name] = im.convert("RGB")
    return photos


def photo_variant(rng: random.Random, im: Image.Image, size: tuple[int, int]) -> Image.Image:
    w, h = im.size
    scale = rng.uniform(0.6, 1.0)
    cw, ch = int(w * scale), int(h * scale)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    out = im.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    return ImageEnhance.Color(out).enhance(rng.uniform(0.7, 1.3))


def shape_image(rng: random.Random, shape: str, colour: str, bg: str, size: int = 256) -> Image.Image:
    im = Image.new("RGB", (size, size), COLOURS[bg])
    d = ImageDraw.Draw(im)
    m = rng.randint(30, 70)
    box = (m, m, size - m, size - m)
    if shape == "circle":
        d.ellipse(box, fill=COLOURS[colour])
    elif shape == "square":
        d.rectangle(box, fill=COLOURS[colour])
    else:
        d.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=COLOURS[colour])
    return im


def encode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    kwargs = {"quality": 85} if fmt in ("JPEG", "WEBP") else {"optimize": True}
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


class Samples:
    """Deterministic stream of (image bytes, ext, caption, url, truth) tuples with planted noise."""

    def __init__(self, seed: int, laion: pl.DataFrame):
        self.rng = random.Random(seed)
        self.photos = load_photos()
        self.laion = laion
        self.preferences: list[dict] = []

    def laion_row(self) -> tuple[str, str]:
        i = self.rng.randrange(self.laion.height)
        return self.laion["TEXT"][i], self.laion["URL"][i]

    def good(self, fmt: str = "JPEG") -> tuple[bytes, str, str, str]:
        rng = self.rng
        _, url = self.laion_row()
        if rng.random() < 0.7:
            name = rng.choice(sorted(PHOTOS))
            size = (rng.choice([224, 256, 288, 320]), rng.choice([224, 256, 288]))
            im, caption = photo_variant(rng, self.photos[name], size), rng.choice(PHOTOS[name])
        else:
            shape, colour = rng.choice(SHAPES), rng.choice(sorted(COLOURS))
            bg = rng.choice([c for c in sorted(COLOURS) if c != colour])
            im, caption = shape_image(rng, shape, colour, bg), f"a {colour} {shape} on a {bg} background"
        return encode(im, fmt), fmt, caption, url

    def sample(self, fmt: str = "JPEG") -> tuple[bytes, str, str, str, str]:
        """A pair with a planted kind: good, mismatched, boilerplate, tiny, banner."""
        r = self.rng.random()
        data, fmt, caption, url = self.good(fmt)
        if r < 0.55:
            return data, fmt, caption, url, "good"
        if r < 0.80:
            alt, url = self.laion_row()
            return data, fmt, alt, url, "mismatched"
        if r < 0.88:
            return data, fmt, self.rng.choice(BOILERPLATE), url, "boilerplate"
        if r < 0.95:
            im = Image.open(io.BytesIO(data)).resize(self.rng.choice([(48, 48), (120, 90)]))
            return encode(im, fmt), fmt, caption, url, "tiny"
        im = Image.open(io.BytesIO(data)).resize((660, 180))
        return encode(im, fmt), fmt, caption, url, "banner"

    def prefer(self, uid: str, caption: str) -> None:
        """A preference record: the true caption beats a mismatched web alt-text and boilerplate."""
        worse = [self.laion_row()[0], self.rng.choice(BOILERPLATE)]
        captions = [caption, *worse]
        order = list(range(3))
        self.rng.shuffle(order)
        self.preferences.append({
            "image_key": uid,
            "captions": [captions[i] for i in order],
            "preferred": order.index(0),
            "criteria": {"accuracy": order.index(0), "completeness": order.index(0)},
        })


EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
    tf.addfile(info, io.BytesIO(data))


def write_webdataset(path: Path, s: Samples, n: int, img2dataset_style: bool, shared: dict) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(n):
            key = f"{i:06d}"
            fmt = s.rng.choice(["JPEG", "JPEG", "JPEG", "PNG", "WEBP"])
            data, fmt, caption, url, kind = s.sample(fmt)
            if i in (5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16):
                caption = REPEATED  # the same site text on a dozen images
            if i == 20:
                data, fmt = shared["dup"], "JPEG"  # exact duplicate of an image in another shard
            if i == 21:
                data = shared["dup"]  # ... and again inside this shard
                fmt = "JPEG"
            if kind == "good" and s.rng.random() < 0.3:
                s.prefer(f"{path.name}::{key}", caption)
            meta = {"url": url, "key": key}
            if img2dataset_style:
                meta.update({"caption": caption, "status": "success", "error_message": None, "width": None, "height": None})
            add(tf, f"{key}.{EXT[fmt]}", data)
            if not img2dataset_style or i % 2:
                add(tf, f"{key}.txt", caption.encode())
            add(tf, f"{key}.json", json.dumps(meta).encode())
        # deliberately broken members
        add(tf, "900000.jpg", b"\xff\xd8\xff\xe0" + bytes(s.rng.getrandbits(8) for _ in range(600)))  # corrupt JPEG
        add(tf, "900000.txt", b"a corrupt jpeg")
        good = shared["good_jpeg"]
        add(tf, "900001.jpg", good[: len(good) // 2])  # truncated JPEG
        add(tf, "900001.txt", b"a truncated jpeg")
        add(tf, "900002.jpg", good)
        add(tf, "900002.txt", "caf\xe9 au lait in a white cup".encode("latin-1"))  # not UTF-8
        add(tf, "900003.jpg", good)
        add(tf, "900003.txt", b"   ")  # empty caption
        add(tf, "900004.jpg", good)  # no caption at all
        add(tf, "900005.txt", b"a caption whose image never arrived")


def write_img2dataset_parquet(path: Path, s: Samples, n: int, shared: dict) -> None:
    rows = []
    for i in range(n):
        data, fmt, caption, url, _ = s.sample("JPEG")
        if i == 7:
            caption = "Caf\u00c3\u00a9 &amp; croissant on the terrace"  # mojibake + HTML entity, repaired by ftfy
        if i == 8:
            data = shared["dup"]
        rows.append({"key": f"{i:09d}", "url": url, "caption": caption, "status": "success", "error_message": None, "jpg": data})
    rows.append({"key": f"{n:09d}", "url": "http://example.com/gone.jpg", "caption": "a picture that failed to download", "status": "failed_to_download", "error_message": "HTTP 404", "jpg": None})
    rows.append({"key": f"{n + 1:09d}", "url": "http://example.com/text.jpg", "caption": "a member that is text, not an image", "status": "success", "error_message": None, "jpg": b"<html>not an image</html>"})
    table = pa.Table.from_pylist(rows, schema=pa.schema([("key", pa.string()), ("url", pa.string()), ("caption", pa.string()), ("status", pa.string()), ("error_message", pa.string()), ("jpg", pa.binary())]))
    pq.write_table(table, path, row_group_size=32)


def write_manifest(path: Path, image_dir: Path, s: Samples, n: int, fmt_name: str) -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        data, fmt, caption, url, _ = s.sample("JPEG")
        name = f"{path.stem}_{i:04d}.jpg"
        (image_dir / name).write_bytes(data)
        rows.append({"key": f"{path.stem}-{i:04d}", "image_path": f"{image_dir.name}/{name}", "caption": caption, "url": url})
    (image_dir / "empty.jpg").write_bytes(b"")
    rows.append({"key": f"{path.stem}-empty", "image_path": f"{image_dir.name}/empty.jpg", "caption": "a zero byte file", "url": ""})
    rows.append({"key": f"{path.stem}-missing", "image_path": f"{image_dir.name}/does_not_exist.jpg", "caption": "a file that is not there", "url": ""})
    if fmt_name == "csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["key", "image_path", "caption", "url"])
            w.writeheader()
            w.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--laion", type=Path, default=DEFAULT_LAION)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    laion = pl.read_parquet(args.laion).select("URL", "TEXT").sort("URL")
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    s = Samples(seed=20261125, laion=laion)
    dup, *_ = s.good("JPEG")
    shared = {"dup": dup, "good_jpeg": s.good("JPEG")[0]}
    write_webdataset(args.out / "webdataset-00000.tar", s, 80, False, shared)
    write_webdataset(args.out / "img2dataset-00001.tar", s, 60, True, shared)
    write_img2dataset_parquet(args.out / "img2dataset-00002.parquet", s, 60, shared)
    write_manifest(args.out / "manifest-00003.csv", args.out / "images-00003", s, 50, "csv")
    write_manifest(args.out / "manifest-00004.jsonl", args.out / "images-00004", s, 40, "jsonl")
    ANNOTATIONS.parent.mkdir(parents=True, exist_ok=True)
    ANNOTATIONS.write_text("".join(json.dumps(p, sort_keys=True) + "\n" for p in s.preferences))
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"wrote {args.out} ({total / 1e6:.1f} MB) and {len(s.preferences)} preference records to {ANNOTATIONS}")


if __name__ == "__main__":
    main()
