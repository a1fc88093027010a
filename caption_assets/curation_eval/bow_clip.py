"""The default model of ``curation_eval``'s recipe: a bag-of-words contrastive model over a locked random image tower.

Why this model and not a small CLIP trained end to end: a few hundred pairs (the bundled sample) cannot
teach a from-scratch image transformer and text transformer anything that survives a new phrasing, so
every training set lands near chance and the comparison is noise. Two choices make the data, not the
optimiser, decide the figure:

- **Text tower: bag of words and word pairs**, the text encoding of the CLIP paper's efficiency experiment,
  where contrastive training over bags of words learned fastest of the objectives it tried. The vocabulary is
  the training set's own words and adjacent word pairs ("red circle"), so a word no training caption contains
  means nothing to the model, whatever the test phrasing. Every caption also carries one always-present token,
  so a caption of unknown words is an uninformative query, never a tie with everything.
- **Image tower: a fixed, seeded random conv featuriser** (random features, as in LiT's locked tower but
  untrained) with a trained MLP head. It is not the pipeline's CLIP and was trained on nothing, so the
  evaluation does not share a model with the filter it judges; the features are computed once per seed.

Image selection still moves the figure (duplicates and off-topic photos teach less per pair), and so does
caption quality (a wrong colour word is learned as that colour).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

WORD = re.compile(r"[^\W_]+")  # runs of letters or digits, in any script
PAD, ALWAYS = 0, 1  # padding (ignored by the bag) and the token every caption carries


def words_and_pairs(text: str) -> list[str]:
    w = WORD.findall(text.lower())
    return w + [f"{a} {b}" for a, b in zip(w, w[1:])]


class BagTokenizer:
    """Token ids over a fixed vocabulary (the training captions' words and word pairs); unknown tokens are dropped."""

    def __init__(self, captions: Sequence[str]):
        vocab = sorted({t for c in captions for t in words_and_pairs(c)})
        self.index = {t: i + 2 for i, t in enumerate(vocab)}

    @property
    def size(self) -> int:
        return len(self.index) + 2

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids = [[ALWAYS, *(self.index[t] for t in words_and_pairs(c) if t in self.index)] for c in texts]
        width = max((len(i) for i in ids), default=1)
        return torch.tensor([i + [PAD] * (width - len(i)) for i in ids], dtype=torch.long).reshape(len(ids), width)


class RandomConvFeatures(nn.Module):
    """Two random 5x5 / 3x3 conv layers with ReLU and pooling; colour, edges and coarse layout, never trained."""

    def __init__(self, seed: int, width: int = 32):
        super().__init__()
        g = torch.Generator().manual_seed(10_000 + seed)
        self.register_buffer("w1", torch.randn(width, 3, 5, 5, generator=g) / 75**0.5)
        self.register_buffer("b1", torch.randn(width, generator=g) * 0.1)
        self.register_buffer("w2", torch.randn(2 * width, width, 3, 3, generator=g) / (9 * width) ** 0.5)
        self.register_buffer("b2", torch.randn(2 * width, generator=g) * 0.1)
        self.dim = 2 * width * (1 + 4 + 4)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
        out = []
        for i in range(0, len(x), batch):
            h = F.max_pool2d(F.relu(F.conv2d(x[i : i + batch], self.w1, self.b1, padding=2)), 2)
            h = F.relu(F.conv2d(h, self.w2, self.b2, padding=1))
            pooled = (F.adaptive_avg_pool2d(h, 1), F.adaptive_max_pool2d(h, 2), F.adaptive_avg_pool2d(h, 2))
            out.append(torch.cat([p.flatten(1) for p in pooled], 1))
        return torch.cat(out) if out else torch.zeros(0, self.dim)


class BagClip(nn.Module):
    """Two towers to a shared ``dim``-wide space; ``encode_image`` takes normalised pixels like open_clip's models."""

    def __init__(self, vocab_size: int, seed: int, dim: int = 64, hidden: int = 256, width: int = 32):
        super().__init__()
        self.features = RandomConvFeatures(seed, width)
        self.image_head = nn.Sequential(nn.LayerNorm(self.features.dim), nn.Linear(self.features.dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.token_embedding = nn.EmbeddingBag(vocab_size, dim, mode="mean", padding_idx=PAD)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.logit_scale = nn.Parameter(torch.tensor(10.0).log())

    def encode_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.image_head(features)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encode_features(self.features(pixels))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(tokens)
