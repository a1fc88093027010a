"""Fuzz ingest for longer than CI does: many random mutated shards of every input format.

    python bench/fuzz.py                   # 2,000 mutated shards per format, random seeds
    python bench/fuzz.py --examples 200 --formats webdataset manifest_jsonl

The property is the test's (tests/fuzzing.py): no exception escapes ingest, every record is a raw pair
or a quarantine row with a reason, counts reconcile, pointers read back the hashed bytes, and nothing
outside the crawl folder is opened. Prints how many shards were tried per format and what they held.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzzing import FORMATS, Tally, fuzz  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=2000, help="mutated shards per format")
    ap.add_argument("--formats", nargs="*", default=list(FORMATS), choices=FORMATS)
    args = ap.parse_args()
    tally, total, t0 = Tally(), 0, time.perf_counter()
    print(f"{'format':22s} {'shards tried':>12s} {'with pairs':>11s} {'with quarantine':>16s} {'seconds':>8s}")
    for fmt in args.formats:
        t = time.perf_counter()
        tried = fuzz(fmt, args.examples, derandomize=False, tally=tally)  # raises on the first (shrunk) failure
        total += tried
        print(f"{fmt:22s} {tried:12d} {tally.pairs.get(fmt, 0):11d} {tally.quarantined.get(fmt, 0):16d} {time.perf_counter() - t:8.1f}", flush=True)
    print(f"\n{total} mutated shards, no failure, in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
