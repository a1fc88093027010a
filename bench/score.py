"""Scoring throughput: scored_pairs pairs/s next to a bare encode loop on already-decoded tensors.

    python bench/score.py [--n 1024] [--batch 64] [--models demo-tiny-clip,ViT-B-32] [--device auto] [--precision fp32]

Both sides use the same model, batch size and captions in one run; the bare loop gets its images
decoded and preprocessed up front, so the ratio shows whether the data path (pointer reads, decode,
preprocess in DataLoader workers) keeps the model busy. Target: >= 0.8 at batch 64. The same two
measurements as ``bench/peers.py`` (which adds clip-retrieval), without the peer.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.ingest import make_shards  # noqa: E402
from bench.peers import _bare, _product, checkpoint, in_process, ingest_to_files  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--models", default="demo-tiny-clip,ViT-B-32")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        raw_paths = ingest_to_files(make_shards(Path(tmp), args.n, 1))
        for model in args.models.split(","):
            name, ckpt = checkpoint(model, Path(tmp))
            common = (name, str(ckpt), raw_paths, args.batch, args.device, args.precision, args.workers)
            ours, bare = in_process(_product, *common), in_process(_bare, *common)
            pipeline, limit = ours["pairs"] / ours["processing_s"], bare["pairs"] / bare["processing_s"]
            print(f"{name:16s} {ours['device']}/{args.precision} batch {args.batch}: scored_pairs {pipeline:8.1f} pairs/s | "
                  f"bare encode {limit:8.1f} pairs/s | ratio {pipeline / limit:.2f}")


if __name__ == "__main__":
    main()
