"""Scoring throughput: scored_pairs pairs/s next to a bare encode loop on already-decoded tensors.

    python bench/score.py [--n 1024] [--batch 64] [--models demo,ViT-B-32] [--device auto] [--precision fp32]

Both sides use the same model, batch size and captions in one run; the bare loop gets its images
decoded and preprocessed up front, so the ratio shows whether the data path (pointer reads, decode,
preprocess in DataLoader workers) keeps the model busy. Target: >= 0.8 at batch 64.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.ingest import make_shards  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--models", default="demo-tiny-clip,ViT-B-32")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from caption_assets.assets.scored_pairs import score_pairs
    from caption_assets.ingest import POINTER_COLUMNS, ingest_shard
    from resources.clip import ClipScorer, build_random_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        shard = make_shards(Path(tmp), args.n, 1)[0]
        raw = ingest_shard(shard, shard.name).pairs
        for name in args.models.split(","):
            ckpt = build_random_checkpoint(Path(tmp) / f"{name}.pt", name)
            clip = ClipScorer(model_name=name, pretrained=str(ckpt), device=args.device, precision=args.precision, batch_size=args.batch, num_workers=args.workers)
            clip.load()
            score_pairs(raw.head(args.batch), clip)  # warm-up

            t0 = time.perf_counter()
            scored, _, _ = score_pairs(raw, clip)
            pipeline = scored.height / (time.perf_counter() - t0)

            # bare loop: decode + preprocess first (untimed), then only the encoders
            from resources.clip import PointerImages, _image_size, encode_text_trimmed

            ds = PointerImages(raw.select(POINTER_COLUMNS).rows(), clip._preprocess, _image_size(clip._preprocess))
            pixels = torch.stack([ds[i][0] for i in range(len(ds))])
            tokens = clip._tokenizer(raw["caption"].to_list())
            model, dev = clip.model, clip._device
            t0 = time.perf_counter()
            with torch.inference_mode(), clip._autocast():
                for s in range(0, len(pixels), args.batch):
                    model.encode_image(pixels[s : s + args.batch].to(dev))
                    encode_text_trimmed(model, tokens[s : s + args.batch].to(dev))
                if dev.startswith("cuda"):
                    torch.cuda.synchronize()
            bare = len(pixels) / (time.perf_counter() - t0)
            print(f"{name:16s} {clip._device}/{args.precision} batch {args.batch}: scored_pairs {pipeline:8.1f} pairs/s | bare encode {bare:8.1f} pairs/s | ratio {pipeline / bare:.2f}")


if __name__ == "__main__":
    main()
