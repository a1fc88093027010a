"""Captioning and fusion throughput.

    python bench/caption.py [--n 256] [--batch 32] [--requests 480] [--latency 0.05] [--concurrency 16]

1. recaptioned_pairs' data path (pointer reads + decode + preprocess in DataLoader workers, then
   generate + CLIP rerank) in captions/s, next to a bare ``generate`` loop over the same images
   decoded up front, same model and decoding config, one run. Target >= 0.8.
2. The fuser's OpenAI-compatible path against a local stub that answers after a fixed latency:
   requests/s next to the stub's ideal rate (concurrency / latency). Target >= 0.8 at 16.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.ingest import make_shards  # noqa: E402


def bench_captioning(n: int, batch: int, workers: int) -> None:
    from caption_assets.assets.recaption import rerank
    from caption_assets.ingest import POINTER_COLUMNS, ingest_shard
    from resources.captioner import Captioner
    from resources.clip import ClipScorer
    from resources.pointer_data import PointerImages

    with tempfile.TemporaryDirectory() as tmp:
        shard = make_shards(Path(tmp), n, 1)[0]
        raw = ingest_shard(shard, shard.name).pairs
        refs = raw.select(POINTER_COLUMNS).rows()
        cap = Captioner(model="demo", models_dir=tmp, batch_size=batch, num_workers=workers, decoding="diverse_beam", num_candidates=3, beams_per_group=2, max_new_tokens=12)
        clip = ClipScorer(model_name="demo-tiny-clip", pretrained="demo", models_dir=tmp, num_workers=0)
        cap.load()
        clip.load()
        image_emb, _ = clip.encode_images(refs)
        cap.caption_images(refs[:batch])  # warm-up

        t0 = time.perf_counter()
        candidates, ok = cap.caption_images(refs)
        t_caption = time.perf_counter() - t0
        rerank(image_emb[ok], candidates, clip)
        pipeline = len(candidates) / (time.perf_counter() - t0)
        data_path = len(candidates) / t_caption

        ds = PointerImages(refs, cap._pixels, 64)
        pixels = torch.stack([ds[i][0] for i in range(len(ds))])
        t0 = time.perf_counter()
        for s in range(0, len(pixels), batch):
            cap.generate(pixels[s : s + batch])
        bare = len(pixels) / (time.perf_counter() - t0)
    print(f"captioning  demo captioner, diverse beam 3x2, batch {batch}: bare generate {bare:7.1f} captions/s")
    print(f"  pointer reads + decode + generate  {data_path:7.1f} /s | ratio {data_path / bare:.2f}")
    print(f"  ... + CLIP rerank of 3 candidates  {pipeline:7.1f} /s | ratio {pipeline / bare:.2f}  (recaptioned_pairs)")


class _Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers (vLLM/uvicorn) do
    disable_nagle_algorithm = True  # headers and body go out without waiting on a delayed ACK
    latency = 0.05

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.latency)
        body = json.dumps({"choices": [{"message": {"content": "a fused caption"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def bench_http(requests: int, latency: float, concurrency: int) -> None:
    from caption_assets.fusion import FusionInput
    from resources.fuser import CaptionFuser

    _Stub.latency = latency
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fuser = CaptionFuser(backend="openai", endpoint_url=f"http://127.0.0.1:{server.server_address[1]}/v1", model="stub", max_concurrency=concurrency)
    fuser.setup_for_execution()
    items = [FusionInput(f"alt {i}", f"synthetic {i}") for i in range(requests)]
    fuser.fuse(items[:concurrency])  # warm the connection pool
    t0 = time.perf_counter()
    out = fuser.fuse(items)
    rate = requests / (time.perf_counter() - t0)
    fuser.teardown_after_execution()
    server.shutdown()
    ideal = concurrency / latency
    failed = sum(1 for _, e in out if e)
    print(f"fusion HTTP concurrency {concurrency}, stub latency {latency * 1000:.0f} ms: {rate:7.1f} req/s | ideal {ideal:7.1f} | ratio {rate / ideal:.2f} | failed {failed}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--requests", type=int, default=480)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    np.random.seed(0)
    bench_captioning(args.n, args.batch, args.workers)
    bench_http(args.requests, args.latency, args.concurrency)


if __name__ == "__main__":
    main()
