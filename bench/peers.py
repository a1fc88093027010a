"""The product next to what a user would run instead, on the same shards, model, batch size and device.

    python bench/peers.py [--n 2048] [--batch 64] [--models world-clip,ViT-B-32] [--device auto] [--precision fp32]

In one run, on the same WebDataset shards (``--workers`` of them: clip-retrieval gives each decode worker
whole shards, so one shard would leave a worker idle):

- scoring: ``scored_pairs`` as the asset runs it (pointers from ``raw_pairs``, DataLoader workers decoding
  and tokenising) vs clip-retrieval's ``clip-retrieval inference`` (installed by this script into
  ``bench/out/clip-retrieval-venv``: its pins clash with ours) vs the bare encode loop on pre-decoded
  tensors (the limit). Same open_clip architecture and weights, from one local checkpoint file.
- ingest: ``raw_pairs`` (hashes, pHash, flags, pointers) vs ``webdataset``'s tar iteration + Pillow decode.

Each measurement runs in its own process, so its peak RSS is its own. clip-retrieval's stats separate
model load and warm-up from processing; both its processing rate and its end-to-end rate are printed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.ingest import make_shards  # noqa: E402

PEER_VENV = ROOT / "bench" / "out" / "clip-retrieval-venv"
PEER_PINS = ["torch==2.14.1", "torchvision==0.29.1", "clip-retrieval==2.45.0", "setuptools<81"]
WORLD_CLIP = ROOT / "data" / "demo_models" / "world-clip.pt"


def peer_venv() -> Path:
    """clip-retrieval in a virtualenv of its own (numpy 1.26, open_clip 2.32); created on first use."""
    exe = PEER_VENV / "bin" / "clip-retrieval"
    if not exe.exists():
        print(f"installing clip-retrieval into {PEER_VENV} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q", *PEER_PINS], check=True)
    return exe


def checkpoint(name: str, folder: Path) -> tuple[str, Path]:
    """(open_clip model name, local checkpoint file): the shipped world-clip, or random weights for a stock architecture."""
    if name == "world-clip":
        return name, WORLD_CLIP
    from resources.clip import build_random_checkpoint

    return name, build_random_checkpoint(folder / f"{name}.pt", name)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _product(name: str, ckpt: str, raw_paths: list[str], batch: int, device: str, precision: str, workers: int, q) -> None:
    import polars as pl

    from caption_assets.assets.scored_pairs import score_pairs
    from resources.clip import ClipScorer

    clip = ClipScorer(model_name=name, pretrained=ckpt, device=device, precision=precision, batch_size=batch, num_workers=workers)
    t0 = time.perf_counter()
    clip.load()
    score_pairs(pl.read_parquet(raw_paths[0]).head(batch), clip)  # warm-up, as a long-lived run process would be
    ready = time.perf_counter() - t0
    t1, n = time.perf_counter(), 0
    for path in raw_paths:  # one partition after another, as the asset runs them
        scored, _, _ = score_pairs(pl.read_parquet(path), clip)
        n += scored.height
    q.put({"pairs": n, "processing_s": time.perf_counter() - t1, "setup_s": ready, "peak_mb": _peak_mb(), "device": clip._device})


def _bare(name: str, ckpt: str, raw_paths: list[str], batch: int, device: str, precision: str, workers: int, q) -> None:
    import polars as pl
    import torch

    from caption_assets.ingest import POINTER_COLUMNS
    from resources.clip import ClipScorer, PointerImages, _image_size, encode_text_trimmed

    raw = pl.read_parquet(raw_paths)
    clip = ClipScorer(model_name=name, pretrained=ckpt, device=device, precision=precision, batch_size=batch, num_workers=workers)
    clip.load()
    ds = PointerImages(raw.select(POINTER_COLUMNS).rows(), clip._preprocess, _image_size(clip._preprocess))
    pixels = torch.stack([ds[i][0] for i in range(len(ds))])  # decoded and tokenised up front: not timed
    tokens = clip._tokenizer(raw["caption"].to_list())
    model, dev = clip.model, clip._device
    with torch.inference_mode(), clip._autocast():
        model.encode_image(pixels[:batch].to(dev)), encode_text_trimmed(model, tokens[:batch].to(dev))  # warm-up
        if dev.startswith("cuda"):
            pixels, tokens = pixels.to(dev), tokens.to(dev)
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(0, len(pixels), batch):
            model.encode_image(pixels[s : s + batch].to(dev))
            encode_text_trimmed(model, tokens[s : s + batch].to(dev))  # the same text forward the product runs
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
    q.put({"pairs": len(pixels), "processing_s": time.perf_counter() - t0, "peak_mb": _peak_mb(), "device": dev})


def _ingest(shards: list[str], q) -> None:
    from caption_assets.ingest import ingest_shard

    t0, n = time.perf_counter(), 0
    for shard in shards:
        n += ingest_shard(Path(shard), Path(shard).name).pairs.height
    q.put({"pairs": n, "processing_s": time.perf_counter() - t0, "peak_mb": _peak_mb()})


def _webdataset(shards: list[str], q) -> None:
    import webdataset as wds

    t0, n = time.perf_counter(), 0
    for sample in wds.WebDataset(shards, shardshuffle=False).decode("pil"):
        sample["jpg"].load()
        n += 1
    q.put({"pairs": n, "processing_s": time.perf_counter() - t0, "peak_mb": _peak_mb()})


def ingest_to_files(shards: list[Path]) -> list[str]:
    """raw_pairs of each shard, written beside it: the scoring runs read pointers from these, as the asset does."""
    from caption_assets.ingest import ingest_shard
    from resources.storage import atomic_write_parquet

    paths = []
    for shard in shards:
        paths.append(str(shard.with_name(f"{shard.stem}.raw_pairs.parquet")))
        atomic_write_parquet(ingest_shard(shard, shard.name).pairs, Path(paths[-1]))
    return paths


def in_process(fn, *args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def clip_retrieval(name: str, ckpt: Path, shards: list[Path], out: Path, batch: int, device: str, workers: int) -> dict:
    """``clip-retrieval inference`` on the same shards and checkpoint; wall time and its own stats."""
    exe = peer_venv()
    out.mkdir(parents=True, exist_ok=True)
    first, last = shards[0].stem.split("-")[-1], shards[-1].stem.split("-")[-1]
    cmd = [str(exe), "inference", "--input_dataset", str(shards[0].parent / f"bench-{{{first}..{last}}}.tar"), "--output_folder", str(out), "--input_format", "webdataset",
           "--enable_text", "True", "--enable_image", "True", "--enable_metadata", "False", "--batch_size", str(batch),
           "--num_prepro_workers", str(workers), "--clip_model", f"open_clip:{name}/{ckpt.resolve()}", "--write_batch_size", "100000"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "" if device == "cpu" else os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    if name == "world-clip":  # the peer needs the architecture registered too: run its CLI with our config on open_clip's path
        env["PYTHONPATH"] = str(out / "_register")
        (out / "_register").mkdir(exist_ok=True)
        (out / "_register" / "sitecustomize.py").write_text(
            f"import open_clip\nopen_clip.add_model_config({str(WORLD_CLIP.with_suffix('.json'))!r})\n"
        )
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"clip-retrieval failed:\n{proc.stderr[-3000:]}")
    peak = next((int(l.split()[-1]) / 1024 for l in proc.stderr.splitlines() if "Maximum resident set size" in l), float("nan"))
    import numpy as np

    stats = [json.loads(f.read_text()) for f in (out / "stats").glob("*.json") if not f.name.startswith("wip_")]
    n = sum(len(np.load(f)) for f in (out / "img_emb").glob("*.npy"))
    # its per-batch durations (read + inference + write) summed: processing without model load and start-up
    processing = sum(s.get("total_duration", 0.0) for s in stats)
    return {"pairs": n, "wall_s": wall, "processing_s": processing, "peak_mb": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--models", default="world-clip,ViT-B-32")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    card = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU, {os.cpu_count()} cores"
    peer_venv()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shards = make_shards(tmp, args.n, args.workers)
        size = sum(s.stat().st_size for s in shards) / 1e6
        print(f"{args.n} pairs in {len(shards)} shards ({size:.0f} MB), batch {args.batch}, {device}/{args.precision}, {card}", flush=True)

        ing, wds_ = in_process(_ingest, [str(s) for s in shards]), in_process(_webdataset, [str(s) for s in shards])
        rate = lambda r: r["pairs"] / r["processing_s"]  # noqa: E731
        lines.append(f"ingest      raw_pairs {rate(ing):7.1f} pairs/s ({ing['peak_mb']:.0f} MiB) | webdataset+Pillow {rate(wds_):7.1f} pairs/s "
                     f"({wds_['peak_mb']:.0f} MiB) | ratio {rate(ing) / rate(wds_):.2f} (target >= 1.0)")
        raw_paths = ingest_to_files(shards)
        for model in args.models.split(","):
            name, ckpt = checkpoint(model, tmp)
            common = (name, str(ckpt), raw_paths, args.batch, device, args.precision, args.workers)
            ours, bare = in_process(_product, *common), in_process(_bare, *common)
            peer = clip_retrieval(name, ckpt, shards, tmp / f"peer-{name}", args.batch, device, args.workers)
            end_to_end = lambda r: r["pairs"] / (r["processing_s"] + r["setup_s"])  # noqa: E731
            peer_proc, peer_e2e = peer["pairs"] / peer["processing_s"], peer["pairs"] / peer["wall_s"]
            lines.append(
                f"{name:10s}  processing: scored_pairs {rate(ours):7.1f} | clip-retrieval {peer_proc:7.1f} | bare loop {rate(bare):7.1f} pairs/s"
                f"   -> product/clip-retrieval {rate(ours) / peer_proc:.2f} (target >= 1.0), product/bare {rate(ours) / rate(bare):.2f} (target >= 0.8)"
            )
            lines.append(
                f"{'':10s}  end to end (model load + start-up): scored_pairs {end_to_end(ours):7.1f} | clip-retrieval {peer_e2e:7.1f} pairs/s"
                f"   -> {end_to_end(ours) / peer_e2e:.2f};  peak RSS {ours['peak_mb']:.0f} vs {peer['peak_mb']:.0f} MiB"
            )
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
