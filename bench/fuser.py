"""The demo's world-fuser: fused pairs/s in-process and through an OpenAI-compatible server, one run.

    python bench/fuser.py [--model data/demo_models/world-fuser] [--n 200] [--batch 32] [--concurrency 4]

The same held-out test-split prompts go through the ``transformers`` backend (batched greedy generation) and
through the ``openai`` backend against ``transformers serve`` on loopback (started here, stopped after), both
with the product's ``CaptionFuser``. Prints pairs/s for each, their ratio, and how many outputs are identical.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "data" / "demo_models" / "world-fuser")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    import torch

    from caption_assets.world.data import TEST
    from caption_assets.world.train_fuser import examples
    from resources.fuser import CaptionFuser
    from tests.helpers import Server, free_port

    items = [e.inputs for e in examples(TEST, args.n)]
    common = {"model": str(args.model), "template": "fusecap_v1", "max_new_tokens": 64}
    local = CaptionFuser(backend="transformers", batch_size=args.batch, device="cpu", precision="fp32", **common)
    local.setup_for_execution()
    local.fuse(items[:8])  # load the model and warm up outside the timing
    t0 = time.perf_counter()
    want = local.fuse(items)
    in_process = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(args.model, free_port(), Path(tmp) / "serve.log")
        server.start()
        try:
            remote = CaptionFuser(backend="openai", endpoint_url=server.url, max_concurrency=args.concurrency, timeout_s=120.0, **common)
            remote.setup_for_execution()
            remote.fuse(items[:4])
            t0 = time.perf_counter()
            got = remote.fuse(items)
            served = time.perf_counter() - t0
            remote.teardown_after_execution()
        finally:
            server.stop()
    print(json.dumps({
        "n": args.n, "torch_threads": torch.get_num_threads(),
        "in_process_pairs_per_s": round(args.n / in_process, 1), "batch_size": args.batch,
        "served_pairs_per_s": round(args.n / served, 1), "concurrency": args.concurrency,
        "served_over_in_process": round(in_process / served, 2),
        "identical_outputs": sum(a == b for a, b in zip(want, got)),
    }, indent=2))


if __name__ == "__main__":
    main()
