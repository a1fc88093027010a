"""The consensus (MBR) choice among caption candidates, and the CLIP best-of-N it replaces in the demo."""

from __future__ import annotations

import numpy as np
import pytest

from caption_assets.consensus import agreement, choose

RIGHT = [
    "a white background with a small orange ring on the left and a small green ring at the bottom",
    "a picture of a small orange ring on the left and a small green ring at the bottom on white",
]
EXTRA = "a white background with a small orange ring on the left, a small green ring at the bottom and a small green ring on the right"


def test_consensus_keeps_the_reading_the_candidates_share_over_a_higher_scored_outlier():
    scores = np.array([0.881, 0.879, 0.888])
    assert choose(scores, [*RIGHT, EXTRA], "clip") == 2
    assert choose(scores, [*RIGHT, EXTRA], "consensus") == 0  # the two right ones agree; the CLIP score breaks their tie


def test_unusable_candidates_neither_win_nor_vote():
    scores = np.array([0.5, -np.inf, -np.inf, 0.4])
    cands = [EXTRA, RIGHT[0], RIGHT[1], "a small orange ring on the left and a small green ring at the bottom"]
    assert choose(scores, cands, "consensus") in (0, 3)
    assert choose(np.array([-np.inf, 0.2]), ["", "a red circle"], "consensus") == 1
    assert choose(np.array([-np.inf, -np.inf]), ["", ""], "consensus") == 0  # the caller sees -inf: no synthetic caption


def test_agreement_is_word_multiset_f1():
    a = agreement(["a red circle", "a red circle", "a blue square"])
    assert a[0] == a[1] == pytest.approx((1.0 + 1 / 3) / 2) and a[2] == pytest.approx(1 / 3)
    assert agreement(["only one"]).tolist() == [1.0]
    with pytest.raises(ValueError, match="unknown candidate selection"):
        choose(np.array([0.1, 0.2]), ["a", "b"], "vote")
