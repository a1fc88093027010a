"""The export in the hands of the tools people train with: open_clip's training script and Hugging Face `datasets`.

The export is the project's own (``write_webdataset``) over a small hand-made selection: 10 pairs in shards of 4
(4, 4, 2), one PNG among the JPEGs, two fallback pairs with no fused caption in the first five. Cheap (well under
a second) and it holds what trips readers up: an uneven last shard, two image formats, null JSON fields.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import polars as pl
import pytest

from caption_assets.export import DATASET_INFO, INFO_METADATA_KEY, write_webdataset
from tests.helpers import noise_image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # `datasets` reads local tars here; never ask the hub (read at its import)

ROOT = Path(__file__).resolve().parents[1]
N, PER_SHARD, PNG_AT, FALLBACKS = 10, 4, 9, (1, 3)
TINY_NAME = "ci-tiny-clip"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, "mlp_ratio": 2.0},
}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    rows = []
    for i in range(N):
        image = tmp / f"source-{i}.img"
        image.write_bytes(noise_image(i + 1, size=(48, 40), fmt="PNG" if i == PNG_AT else "JPEG"))
        fallback = i in FALLBACKS
        rows.append({
            "uid": f"crawl-0.tar::{i:03d}", "shard": "crawl-0.tar", "key": f"{i:03d}",
            "container": "file", "image_path": str(image), "image_member": None, "image_offset": 0, "image_length": image.stat().st_size,
            "caption": f"alt text {i}", "synthetic_caption": f"a synthetic caption {i}", "fused_caption": None if fallback else f"a fused caption {i}",
            "final_caption": f"a synthetic caption {i}" if fallback else f"a fused caption {i}", "final_source": "synthetic" if fallback else "fused",
            "clip_score": 0.25, "synthetic_score": 0.3, "fused_score": None if fallback else 0.31, "final_score": 0.3, "final_reward_score": 0.1,
            "selection_score": 1.0 - i / N, "alignment_level": i % 3, "cluster": i % 2, "sha256": f"{i:064x}",
        })
    out = tmp / "compressed_dataset"
    manifest = write_webdataset(pl.DataFrame(rows), out, PER_SHARD, "run-ci", veclip=True)
    return out, manifest, {r["uid"]: r for r in rows}


def shard_paths(out: Path) -> list[str]:
    return [str(p) for p in sorted(out.glob("shard-*.tar"))]


def test_dataset_info_counts_equal_the_manifest_and_the_shards(export):
    out, manifest, _ = export
    info = json.loads((out / DATASET_INFO).read_text())
    assert info["num_samples"] == manifest.height == N
    assert info["num_shards"] == 3 and info["samples_per_shard"] == PER_SHARD
    assert info["shard_samples"] == {"shard-00000.tar": 4, "shard-00001.tar": 4, "shard-00002.tar": 2}
    assert info["shard_samples"] == dict(manifest.group_by("shard").len().iter_rows())
    ext = dict(zip(manifest["key"], manifest["image_ext"]))
    real = {}  # what the tars really hold: each sample's members, in order
    for path in shard_paths(out):
        with tarfile.open(path) as tf:
            members: dict[str, set[str]] = {}
            for name in tf.getnames():
                key, _, suffix = name.partition(".")
                members.setdefault(key, set()).add(suffix)
        assert list(members) == manifest.filter(pl.col("shard") == Path(path).name)["key"].to_list()
        assert all(m == {ext[k], "txt", "alt.txt", "json"} for k, m in members.items())
        real[Path(path).name] = len(members)
    assert real == info["shard_samples"]
    assert info["train_data"] == "shard-{00000..00002}.tar"
    assert info["members"] == {"image": ["jpg", "png"], "caption": "txt", "alt_text": "alt.txt", "metadata": "json"}
    # the same JSON travels inside manifest.parquet, and open_clip's sizes.json agrees
    assert json.loads(pl.read_parquet_metadata(out / "manifest.parquet")[INFO_METADATA_KEY]) == info
    assert json.loads((out / "sizes.json").read_text()) == info["shard_samples"]


def test_open_clips_own_reader_still_stops_on_the_end_of_shard_marker(export):
    """Why caption_assets.train_open_clip exists: when this fails, open_clip reads webdataset's marker and it can go."""
    from open_clip_train.data import tarfile_to_samples_nothrow

    with pytest.raises(KeyError, match="fname"):
        list(tarfile_to_samples_nothrow([{"url": p} for p in shard_paths(export[0])]))


def test_tar_samples_yields_every_pair_once_with_the_caption_asked_for(export):
    from caption_assets.train_open_clip import TarSamples

    out, manifest, rows = export
    urls = [{"url": p} for p in shard_paths(out)]
    final = list(TarSamples()(urls))
    assert [s["__key__"] for s in final] == manifest["key"].to_list()
    assert [s["txt"].decode() for s in final] == manifest["final_caption"].to_list()
    alt = list(TarSamples("alt.txt")(urls))
    assert [s["txt"].decode() for s in alt] == [rows[u]["caption"] for u in manifest["uid"]]
    assert [s["txt"] for s in TarSamples(alt_text_prob=1.0)(urls)] == [s["txt"] for s in alt]
    with pytest.raises(KeyError, match="no 'synthetic.txt' member"):
        list(TarSamples("synthetic.txt")(urls))
    with pytest.raises(ValueError):
        TarSamples(alt_text_prob=1.5)


def test_open_clip_trains_on_the_export_and_its_checkpoint_loads(export, tmp_path):
    """open_clip's training script, a few steps of a tiny model on the CPU, through the project's entry point."""
    import open_clip
    import torch

    from caption_assets.clip_models import register_config

    out, _, _ = export
    info = json.loads((out / DATASET_INFO).read_text())
    config = tmp_path / f"{TINY_NAME}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    epochs, batch = 2, 4
    cmd = [sys.executable, "-m", "caption_assets.train_open_clip", "--model-config", str(config),
           "--dataset-type", "webdataset", "--train-data", str(out / info["train_data"]), "--train-num-samples", str(info["num_samples"]),
           "--model", TINY_NAME, "--device", "cpu", "--precision", "fp32", "--batch-size", str(batch), "--epochs", str(epochs),
           "--workers", "1", "--warmup", "1", "--lr", "1e-3", "--seed", "0", "--log-every-n-steps", "1",
           "--logs", str(tmp_path / "logs"), "--name", "ci", "--report-to", ""]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCH_LOGS": "-all", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (tmp_path / "logs" / "ci" / "out.log").read_text()
    losses = [float(x) for x in re.findall(r" Loss: ([-+\d.e]+|nan|inf) \(", log)]
    steps = math.ceil(N / batch)  # open_clip rounds up to whole batches
    assert len(losses) == epochs * steps, log[-2000:]
    assert all(math.isfinite(x) for x in losses) and 0 < losses[-1] < 10
    assert f"train_num_samples: {N}" in (tmp_path / "logs" / "ci" / "params.txt").read_text()
    checkpoint = tmp_path / "logs" / "ci" / "checkpoints" / f"epoch_{epochs}.pt"
    register_config(TINY_NAME, TINY_CONFIG)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_NAME, pretrained=str(checkpoint))
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved["epoch"] == epochs
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in saved["state_dict"].items())
    untrained = open_clip.create_model(TINY_NAME, pretrained=None)
    assert not torch.equal(untrained.state_dict()["text_projection"], model.state_dict()["text_projection"])


@pytest.mark.parametrize("streaming", [False, True], ids=["arrow", "streaming"])
def test_hf_datasets_reads_images_captions_alt_text_and_json(export, tmp_path, streaming):
    from datasets import Features, load_dataset

    out, manifest, rows = export
    info = json.loads((out / DATASET_INFO).read_text())
    ds = load_dataset("webdataset", data_files={"train": shard_paths(out)}, split="train", streaming=streaming,
                      features=Features.from_dict(info["hf_features"]), cache_dir=str(tmp_path / "hf"))
    got = list(ds)
    assert [r["__key__"] for r in got] == manifest["key"].to_list()
    for r, m in zip(got, manifest.iter_rows(named=True)):
        src = rows[m["uid"]]
        images = {ext: r[ext] for ext in ("jpg", "png") if r[ext] is not None}
        assert list(images) == [m["image_ext"]] and images[m["image_ext"]].size == (48, 40)
        assert r["txt"] == m["final_caption"] and r["alt.txt"] == src["caption"]
        meta = r["json"]
        assert meta["uid"] == m["uid"] and meta["final_caption"] == m["final_caption"] and meta["alt_text"] == src["caption"]
        assert meta["fused_caption"] == src["fused_caption"] and meta["scores"]["fused_clip"] == src["fused_score"]
        assert meta["scores"]["selection"] == pytest.approx(src["selection_score"]) and meta["lineage"]["run_id"] == "run-ci"
    assert [r["png"] is not None for r in got].count(True) == 1
    with tarfile.open(shard_paths(out)[0]) as tf:  # the features name every field the export writes, no more
        written = json.loads(tf.extractfile("000000000.json").read())
    assert layout(written) == layout(info["hf_features"]["json"])


def layout(value):
    """The nested keys of a JSON object, or of a Features dict (whose leaves carry ``_type``)."""
    if isinstance(value, dict) and "_type" not in value:
        return {k: layout(v) for k, v in value.items()}
    return None
