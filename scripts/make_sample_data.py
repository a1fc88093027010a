"""Build the committed sample crawl under ``data/sample`` from the procedural world (same bytes every run).

    python scripts/make_sample_data.py [--laion ../shared/data/laion_alt_texts_1000.parquet]

Writes ``data/sample/crawl/`` (five shards, one per input format, with web noise and hostile members),
``data/sample/truth.parquet`` (what every sample really is; no stage reads it) and
``data/annotations/preferences.jsonl`` (preferences derived from the truth). Out-of-domain members:
photos bundled with scikit-image and real web alt-texts from LAION (see data/README.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import polars as pl
from PIL import Image

from caption_assets.world.crawl import CrawlSpec, NoiseRates, preferences, write_crawl

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "sample"
ANNOTATIONS = ROOT / "data" / "annotations" / "preferences.jsonl"
DEFAULT_LAION = ROOT.parent / "shared" / "data" / "laion_alt_texts_1000.parquet"
SEED = 20261125

# scikit-image sample photos -> plain descriptions of what is in them (the out-of-domain members)
PHOTOS = {
    "astronaut": ["an astronaut in a white spacesuit posing in front of a flag", "portrait of a smiling astronaut holding a helmet"],
    "chelsea": ["a tabby cat looking to the side", "close-up of an orange and grey striped cat"],
    "coffee": ["a cup of coffee on a saucer with a spoon", "a white coffee cup seen from above on a red table"],
    "rocket": ["a rocket standing on the launch pad", "a space rocket ready for launch under a blue sky"],
    "motorcycle_left": ["a motorcycle parked in a workshop", "a red sport motorbike in a garage"],
    "hubble_deep_field": ["a telescope image of many distant galaxies", "deep field view of galaxies in dark space"],
    "coins": ["old coins on a dark background", "a collection of round coins laid out in rows"],
    "brick": ["a grey brick wall texture", "close-up of bricks and mortar"],
}
SHARDS = [
    ("webdataset-00000.tar", "webdataset", 100),
    ("img2dataset-00001.tar", "img2dataset_tar", 80),
    ("img2dataset-00002.parquet", "img2dataset_parquet", 80),
    ("manifest-00003.csv", "manifest_csv", 60),
    ("manifest-00004.jsonl", "manifest_jsonl", 60),
]


def load_photos() -> dict[str, tuple[Image.Image, list[str]]]:
    """scikit-image ships these files inside its wheel; no download involved."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    out = {}
    for name, texts in PHOTOS.items():
        with Image.open(next(folder.glob(f"{name}.*"))) as im:
            w, h = im.size
            side = min(w, h)
            out[name] = (im.convert("RGB").crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)), texts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--laion", type=Path, default=DEFAULT_LAION)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    laion = pl.read_parquet(args.laion).select("TEXT", "URL").sort("URL").head(400)
    if (args.out / "crawl").exists():
        shutil.rmtree(args.out / "crawl")
    spec = CrawlSpec(SHARDS, seed=SEED, rates=NoiseRates(ood_photo=0.03), web_texts=list(laion.iter_rows()), photos=load_photos())
    crawl, truth = write_crawl(args.out, spec)
    prefs = list(preferences(truth, fraction=0.4, seed=SEED))
    ANNOTATIONS.parent.mkdir(parents=True, exist_ok=True)
    ANNOTATIONS.write_text("".join(json.dumps(p, sort_keys=True) + "\n" for p in prefs))
    total = sum(f.stat().st_size for f in crawl.rglob("*") if f.is_file())
    print(f"wrote {crawl} ({total / 1e6:.1f} MB, {truth.height} truth rows) and {len(prefs)} preference records to {ANNOTATIONS}")
    with pl.Config(tbl_rows=20):
        print(truth.group_by("noise").len().sort("len", descending=True))


if __name__ == "__main__":
    main()
