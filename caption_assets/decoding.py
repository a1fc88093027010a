"""Diverse Beam Search (Vijayakumar et al.) on top of transformers' own beam search.

transformers 5 moved group beam search to a hub-hosted ``custom_generate`` repo we cannot fetch. DBS
does not need it: group g's choices depend only on groups < g at the same time step, so running the
groups one after another, each a plain beam search whose log-probs are lowered by a Hamming
diversity penalty (``penalty x`` how often earlier groups chose a token at that step), gives the same
search. ``StepRecorder`` notes each group's per-step tokens for the groups after it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor


class StepRecorder(LogitsProcessor):
    """Records the token each alive beam chose at every step: ``steps[t]`` is ``[batch, beams]``."""

    def __init__(self, num_beams: int):
        self.num_beams = num_beams
        self.start_len: int | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start_len is None:
            self.start_len = input_ids.shape[1]
        elif input_ids.shape[1] > self.start_len + len(self.steps):
            self.steps.append(input_ids[:, -1].view(-1, self.num_beams).clone())
        return scores

    def finish(self, sequences: torch.Tensor, returned_per_item: int) -> None:
        """Add the last step (no processor call follows it) from the returned sequences."""
        if self.start_len is not None and sequences.shape[1] > self.start_len + len(self.steps):
            last = sequences[:, self.start_len + len(self.steps)].view(-1, returned_per_item)
            self.steps.append(last)


class HammingDiversity(LogitsProcessor):
    """Subtract ``penalty * count`` from tokens that earlier groups chose at this step."""

    def __init__(self, previous: Sequence[StepRecorder], penalty: float, num_beams: int):
        self.previous, self.penalty, self.num_beams = previous, penalty, num_beams
        self.start_len: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start_len is None:
            self.start_len = input_ids.shape[1]
        step = input_ids.shape[1] - self.start_len
        batch = input_ids.shape[0] // self.num_beams
        counts = torch.zeros(batch, scores.shape[-1], dtype=scores.dtype, device=scores.device)
        for rec in self.previous:
            if step < len(rec.steps):
                chosen = rec.steps[step].to(scores.device)
                counts.scatter_add_(1, chosen, torch.ones_like(chosen, dtype=scores.dtype))
        return scores - self.penalty * counts.repeat_interleave(self.num_beams, dim=0)
