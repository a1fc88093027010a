"""Fuzzed shards of every input format through ingest (property-based; see tests/fuzzing.py).

Bounded for CI (``CAPTION_ASSETS_FUZZ_EXAMPLES`` per format, derandomized so a run repeats);
``python bench/fuzz.py`` runs the same property over many more, random, mutated shards.
"""

from __future__ import annotations

import os

import pytest

from tests.fuzzing import FORMATS, Tally, fuzz

EXAMPLES = int(os.environ.get("CAPTION_ASSETS_FUZZ_EXAMPLES", "80"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_shards_are_ingested_or_quarantined_never_raise(fmt: str):
    tally = Tally()
    tried = fuzz(fmt, EXAMPLES, derandomize=True, tally=tally)
    assert tried >= EXAMPLES // 2  # hypothesis may stop early only when it has run out of distinct inputs
    # the mutations reach both outcomes: some shards still yield pairs, some records are quarantined
    assert tally.pairs[fmt] > 0 and tally.quarantined[fmt] > 0, (tally.pairs, tally.quarantined)
