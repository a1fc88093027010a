"""Compress & Align's learned alignment referee: a small reward head on frozen CLIP embeddings.

Trained from human preferences between captions of the same image with a pairwise Bradley-Terry
loss, ``-log sigmoid(r(image, preferred) - r(image, other))``, a held-out split by image, and early
stopping on held-out loss. Pure torch: no Dagster here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from caption_assets.reward_version import REWARD_CODE_VERSION  # noqa: F401 - re-exported


class RewardHead(nn.Module):
    """r(i, t) = MLP([i * t, i, t]): sees agreement (i * t) and what each side says on its own."""

    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.dim = dim
        self.net = nn.Sequential(nn.Linear(3 * dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image * text, image, text], dim=-1)).squeeze(-1)


@dataclass
class PreferencePairs:
    """Expanded comparisons: image embedding, winner text embedding, loser text embedding, group id."""

    image: np.ndarray
    winner: np.ndarray
    loser: np.ndarray
    group: np.ndarray  # which annotation record (image) a comparison came from

    def __len__(self) -> int:
        return len(self.group)


@dataclass
class TrainReport:
    heldout_accuracy: float
    train_accuracy: float
    best_epoch: int
    epochs_run: int
    n_train: int
    n_heldout: int
    curve: list[dict[str, float]] = field(default_factory=list)


def expand_preferences(image: np.ndarray, captions: list[np.ndarray], preferred: list[int]) -> PreferencePairs:
    """One record (image, K captions, winner index) -> K-1 comparisons winner vs each other caption."""
    imgs, wins, loses, groups = [], [], [], []
    for g, (img, caps, best) in enumerate(zip(image, captions, preferred)):
        for j in range(len(caps)):
            if j != best:
                imgs.append(img)
                wins.append(caps[best])
                loses.append(caps[j])
                groups.append(g)
    dim = image.shape[1] if len(image) else 0
    stack = lambda xs: np.stack(xs).astype(np.float32) if xs else np.zeros((0, dim), np.float32)  # noqa: E731
    return PreferencePairs(stack(imgs), stack(wins), stack(loses), np.asarray(groups, dtype=np.int64))


def heldout_mask(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Deterministic split by record, so no image is on both sides."""
    rng = np.random.default_rng(seed)
    unique = np.unique(groups)
    held = rng.choice(unique, size=max(1, int(round(len(unique) * fraction))), replace=False) if len(unique) > 1 else []
    return np.isin(groups, held)


def pairwise_accuracy(head: RewardHead, pairs: PreferencePairs) -> float:
    if len(pairs) == 0:
        return float("nan")
    with torch.inference_mode():
        i, w, l_ = (torch.from_numpy(x) for x in (pairs.image, pairs.winner, pairs.loser))
        return float((head(i, w) > head(i, l_)).float().mean())


def _subset(p: PreferencePairs, m: np.ndarray) -> PreferencePairs:
    return PreferencePairs(p.image[m], p.winner[m], p.loser[m], p.group[m])


def train_reward_head(
    pairs: PreferencePairs,
    heldout_fraction: float = 0.2,
    max_epochs: int = 400,
    patience: int = 30,
    lr: float = 3e-3,
    weight_decay: float = 1e-3,
    hidden: int = 256,
    seed: int = 0,
) -> tuple[RewardHead, TrainReport]:
    """Full-batch Adam on the Bradley-Terry loss; keeps the epoch with the best held-out loss."""
    torch.manual_seed(seed)
    mask = heldout_mask(pairs.group, heldout_fraction, seed)
    train, held = _subset(pairs, ~mask), _subset(pairs, mask)
    head = RewardHead(pairs.image.shape[1], hidden)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    t = [torch.from_numpy(x) for x in (train.image, train.winner, train.loser)]
    h = [torch.from_numpy(x) for x in (held.image, held.winner, held.loser)]
    best_loss, best_state, best_epoch, curve = float("inf"), None, 0, []
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        head.train()
        opt.zero_grad()
        loss = -torch.nn.functional.logsigmoid(head(t[0], t[1]) - head(t[0], t[2])).mean()
        loss.backward()
        opt.step()
        head.eval()
        with torch.inference_mode():
            held_loss = float(-torch.nn.functional.logsigmoid(head(h[0], h[1]) - head(h[0], h[2])).mean()) if len(held) else float(loss)
        if epoch == 1 or epoch % 10 == 0:
            curve.append({"epoch": epoch, "train_loss": float(loss.detach()), "heldout_loss": held_loss, "heldout_accuracy": pairwise_accuracy(head, held)})
        if held_loss < best_loss - 1e-5:
            best_loss, best_epoch = held_loss, epoch
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    report = TrainReport(pairwise_accuracy(head, held), pairwise_accuracy(head, train), best_epoch, epoch, len(train), len(held), curve)
    return head, report


def data_hash(records: list[dict[str, Any]], clip_model_id: str) -> str:
    """Version of the training data: the annotations as read plus the embedding model they were embedded with."""
    h = hashlib.sha256(clip_model_id.encode())
    for r in records:
        h.update(json.dumps(r, sort_keys=True).encode())
    return h.hexdigest()[:16]


def save_head(head: RewardHead, path: Path, version: str, report: TrainReport) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": head.state_dict(), "dim": head.dim, "hidden": head.net[0].out_features, "version": version, "heldout_accuracy": report.heldout_accuracy}, tmp)
    tmp.replace(path)


def load_head(path: Path) -> tuple[RewardHead, str]:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    head = RewardHead(blob["dim"], blob["hidden"])
    head.load_state_dict(blob["state_dict"])
    head.eval()
    return head, blob["version"]


def score_with_head(head: RewardHead, image: np.ndarray, text: np.ndarray, batch: int = 8192) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for s in range(0, len(image), batch):
            out.append(head(torch.from_numpy(image[s : s + batch].astype(np.float32)), torch.from_numpy(text[s : s + batch].astype(np.float32))).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)
