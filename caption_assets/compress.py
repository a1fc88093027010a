"""Dataset compression: exact and verified-copy dedup, SemDeDup, and TL;DR / Compress & Align codebook selection.

Pure functions over numpy arrays and polars frames. k-means and the similarity search run in faiss
(inner product on L2-normalised float32 embeddings), so millions of 512-d rows fit on one machine:
memory is the embedding matrix plus one cluster's block of similarities at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import polars as pl

from caption_assets.degeneration import is_degenerate


@dataclass(frozen=True)
class CompressConfig:
    target_ratio: float = 0.2
    n_clusters: int = 0  # 0: about sqrt(N / 2), at least 1
    kmeans_iters: int = 20
    semdedup_eps: float = 0.05  # drop if cosine to a kept pair > 1 - eps
    alpha: float = 0.5  # quota ~ size^alpha; 0 = uniform coverage, 1 = proportional
    score: str = "clip"  # "clip" (final caption's clip score), "reward", or "mix"
    mix_weight: float = 0.5  # weight of reward in "mix" (z-scored)
    min_score: float | None = None  # never select below this score, even with quota left
    max_selected: int | None = None  # a hard cap on the export, whatever the ratio gives (e.g. a share of the ingested pairs)
    seed: int = 0


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    faiss.normalize_L2(x)
    return x


def selection_score(df: pl.DataFrame, cfg: CompressConfig) -> np.ndarray:
    clip = df["final_score"].to_numpy().astype(np.float64)
    if cfg.score == "clip":
        return clip
    reward = df["final_reward_score"].to_numpy().astype(np.float64) if "final_reward_score" in df.columns else None
    if reward is None or np.isnan(reward).all():
        return clip  # no reward model: the CLIP score is the only referee
    if cfg.score == "reward":
        return np.nan_to_num(reward, nan=-np.inf)
    z = lambda v: (v - np.nanmean(v)) / (np.nanstd(v) + 1e-9)  # noqa: E731
    return cfg.mix_weight * np.nan_to_num(z(reward), nan=-10) + (1 - cfg.mix_weight) * z(clip)


def exact_duplicates(df: pl.DataFrame, score: np.ndarray) -> np.ndarray:
    """Boolean mask of rows to drop: the same image bytes, or a verified copy (the duplicate index's
    ``copy`` verdict: re-encode, rescale, crop or shift, aligned and checked region by region) of
    another row here. The best-scored row of each set survives (ties: the earlier row)."""
    uid = df["uid"] if "uid" in df.columns else pl.Series([str(i) for i in range(df.height)])
    if "duplicate_kind" in df.columns and "duplicate_of" in df.columns:
        of = df.select(pl.when(pl.col("duplicate_kind") == "copy").then(pl.col("duplicate_of"))).to_series()
    else:
        of = pl.Series([None] * df.height, dtype=pl.String)
    links = pl.DataFrame({"uid": uid, "of": of})
    # a copy of a copy: follow the first occurrence twice (the index points each copy at its first earlier match)
    parent = dict(zip(links["uid"], links["of"]))
    root = links.with_columns(root=pl.coalesce(pl.col("of").replace_strict(parent, default=None), pl.col("of"), pl.col("uid")))
    order = pl.DataFrame({"i": np.arange(df.height), "s": score, "sha": df["sha256"], "root": root["root"]})
    ranked = order.sort(["s", "i"], descending=[True, False]).with_columns(rank=pl.int_range(pl.len()))
    by_sha = ranked.filter(pl.col("rank") != pl.col("rank").min().over("sha"))["i"].to_numpy()
    by_copy = ranked.filter(pl.col("rank") != pl.col("rank").min().over("root"))["i"].to_numpy()
    drop = np.zeros(df.height, dtype=bool)
    drop[by_sha] = True
    drop[by_copy] = True
    return drop


def kmeans(x: np.ndarray, k: int, iters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(assignments, centroids) of spherical k-means in faiss."""
    k = max(1, min(k, len(x)))
    km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, spherical=True, verbose=False, max_points_per_centroid=256,
                   min_points_per_centroid=1)  # small crawls: fewer points per centroid is expected, not a warning
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign[:, 0].astype(np.int64), km.centroids


def default_clusters(n: int) -> int:
    return max(1, int(round(np.sqrt(n / 2))))


def semdedup(x: np.ndarray, clusters: np.ndarray, score: np.ndarray, eps: float, eligible: np.ndarray, block: int = 4096) -> np.ndarray:
    """Mask of semantic duplicates: within a cluster, in score order, a pair is dropped when its
    cosine similarity to an already *kept* pair exceeds 1 - eps (SemDeDup)."""
    thr = 1.0 - eps
    drop = np.zeros(len(x), dtype=bool)
    idx_all = np.flatnonzero(eligible)
    order = idx_all[np.lexsort((idx_all, -score[idx_all], clusters[idx_all]))]
    bounds = np.flatnonzero(np.diff(clusters[order])) + 1
    for members in np.split(order, bounds):
        m = len(members)
        if m < 2:
            continue
        xm = x[members]
        preds: dict[int, np.ndarray] = {}
        for a in range(0, m, block):
            sims = xm[a : a + block] @ xm.T  # rows a.., all columns
            rows, cols = np.nonzero(sims > thr)
            rows += a
            later = cols < rows  # similar to a better-ranked member
            for r, c in zip(rows[later], cols[later]):
                preds.setdefault(int(r), []).append(int(c))  # type: ignore[arg-type]
        kept = np.ones(m, dtype=bool)
        for j in sorted(preds):
            if kept[np.asarray(preds[j])].any():
                kept[j] = False
        drop[members[~kept]] = True
    return drop


def semdedup_alone(image_emb: np.ndarray, eps: float, seed: int = 0, kmeans_iters: int = 20) -> np.ndarray:
    """SemDeDup by itself over every image (k-means, then cosine > 1 - eps within a cluster, the earlier
    row kept): the peer method's own duplicate mask, reported beside the copy verdicts it backs up."""
    if len(image_emb) == 0:
        return np.zeros(0, dtype=bool)
    x = normalise(image_emb)
    cluster, _ = kmeans(x, default_clusters(len(x)), kmeans_iters, seed)
    return semdedup(x, cluster, np.zeros(len(x)), eps, np.ones(len(x), dtype=bool))


def quotas(sizes: np.ndarray, total: int, alpha: float) -> np.ndarray:
    """Per-cluster quotas ~ size^alpha summing to ``total`` (largest remainder), capped by size;
    what a full cluster cannot take goes to clusters with room."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(min(total, sizes.sum()))
    q = np.zeros_like(sizes)
    open_ = sizes > 0
    while total - q.sum() > 0 and open_.any():
        left = total - q.sum()
        w = np.where(open_, np.power(sizes.astype(np.float64), alpha), 0.0)
        share = left * w / w.sum()
        add = np.floor(share).astype(np.int64)
        rem = left - add.sum()
        if rem > 0:
            frac_order = np.argsort(-(share - add), kind="stable")
            add[frac_order[:rem]] += 1
        q = np.minimum(q + add, sizes)
        open_ = q < sizes
    return q


def codebook_select(clusters: np.ndarray, score: np.ndarray, eligible: np.ndarray, target: int, alpha: float, min_score: float | None) -> np.ndarray:
    """Mask of selected rows: each cluster (codeword) keeps its top pairs by score, up to its quota."""
    n_clusters = int(clusters.max()) + 1 if len(clusters) else 0
    sizes = np.bincount(clusters[eligible], minlength=n_clusters)
    q = quotas(sizes, target, alpha)
    df = pl.DataFrame({"i": np.arange(len(clusters)), "c": clusters, "s": score, "ok": eligible, "q": q[clusters]})
    ranked = df.filter("ok").with_columns(r=pl.col("s").rank("ordinal", descending=True).over("c") - 1)
    chosen = ranked.filter(pl.col("r") < pl.col("q"))
    if min_score is not None:
        chosen = chosen.filter(pl.col("s") >= min_score)
    sel = np.zeros(len(clusters), dtype=bool)
    sel[chosen["i"].to_numpy()] = True
    return sel


@dataclass
class Compression:
    cluster: np.ndarray
    exact_dup: np.ndarray
    semantic_dup: np.ndarray
    selected: np.ndarray
    score: np.ndarray
    n_clusters: int
    target: int
    degenerate: np.ndarray | None = None  # final caption degenerate: never exported

    def __post_init__(self) -> None:
        if self.degenerate is None:
            self.degenerate = np.zeros(len(self.selected), dtype=bool)


def compress(df: pl.DataFrame, image_emb: np.ndarray, cfg: CompressConfig) -> Compression:
    """Exact dedup -> k-means codebook -> SemDeDup -> per-cluster quota selection."""
    n = df.height
    if n == 0:
        empty = np.zeros(0, dtype=bool)
        return Compression(np.zeros(0, np.int64), empty, empty, empty, np.zeros(0), 0, 0)
    score = selection_score(df, cfg)
    x = normalise(image_emb)
    exact = exact_duplicates(df, score)
    bad = np.array([is_degenerate(c) for c in df["final_caption"].to_list()], dtype=bool) & ~exact
    cluster, _ = kmeans(x, cfg.n_clusters or default_clusters(n), cfg.kmeans_iters, cfg.seed)
    semantic = semdedup(x, cluster, score, cfg.semdedup_eps, ~exact & ~bad)
    target = int(round(cfg.target_ratio * n))
    if cfg.max_selected is not None:
        target = min(target, cfg.max_selected)
    selected = codebook_select(cluster, score, ~exact & ~semantic & ~bad, target, cfg.alpha, cfg.min_score)
    return Compression(cluster, exact, semantic & ~exact & ~bad, selected, score, int(cluster.max()) + 1, target, bad)
