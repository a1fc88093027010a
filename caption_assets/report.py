"""Before/after quality figures for the compressed dataset, and the one-page HTML report."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from datetime import datetime, timezone

import numpy as np
import polars as pl

from caption_assets.compress import Compression, normalise, semdedup


def vocabulary(captions: pl.Series) -> int:
    return captions.str.to_lowercase().str.extract_all(r"[a-z0-9']+").explode().drop_nulls().n_unique()


def duplicate_rate(df: pl.DataFrame, x: np.ndarray, clusters: np.ndarray, eps: float) -> float:
    """Share of rows that are an exact (sha256) or semantic (cosine > 1 - eps) duplicate of another row."""
    if df.height == 0:
        return 0.0
    exact = ~df["sha256"].is_first_distinct().to_numpy()
    semantic = semdedup(x, clusters, np.zeros(len(x)), eps, ~exact)
    return float((exact | semantic).mean())


def before_after(df: pl.DataFrame, image_emb: np.ndarray, res: Compression, eps: float) -> pl.DataFrame:
    """One row per metric: value over all fused pairs (before) and over the selected ones (after)."""
    x = normalise(image_emb)
    sel = res.selected

    def figures(mask: np.ndarray) -> dict[str, float]:
        part = df.filter(pl.Series(mask))
        words = part["final_caption"].str.count_matches(r"\S+")
        reward = part["final_reward_score"].drop_nulls()
        return {
            "pairs": float(part.height),
            "final_clip_score_mean": float(part["final_score"].mean() or 0.0),
            "final_clip_score_median": float(part["final_score"].median() or 0.0),
            "final_reward_score_mean": float(reward.mean()) if reward.len() else float("nan"),
            "caption_words_mean": float(words.mean() or 0.0),
            "vocabulary_size": float(vocabulary(part["final_caption"])),
            "clusters_covered": float(len(np.unique(res.cluster[mask]))),
            "cluster_coverage": float(len(np.unique(res.cluster[mask])) / max(res.n_clusters, 1)),
            "duplicate_rate": duplicate_rate(part, x[mask], res.cluster[mask], eps),
        }

    before, after = figures(np.ones(df.height, dtype=bool)), figures(sel)
    return pl.DataFrame({"metric": list(before), "before": list(before.values()), "after": [after[k] for k in before]})


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def plots(df: pl.DataFrame, res: Compression) -> dict[str, str]:
    """Base64 PNGs: score and caption-length distributions before/after, cluster coverage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    sel = pl.Series(res.selected)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    s_all, s_sel = df["final_score"].to_numpy(), df.filter(sel)["final_score"].to_numpy()
    lo, hi = (float(s_all.min()), float(s_all.max())) if len(s_all) else (0.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-3, 30)
    axes[0].hist(s_all, bins=bins, alpha=0.6, label="before")
    axes[0].hist(s_sel, bins=bins, alpha=0.8, label="after")
    axes[0].set_title("final caption CLIP score")
    axes[0].legend()
    w_all = df["final_caption"].str.count_matches(r"\S+").to_numpy()
    w_sel = df.filter(sel)["final_caption"].str.count_matches(r"\S+").to_numpy()
    wb = np.arange(0, max(w_all.max(initial=1), 1) + 2)
    axes[1].hist(w_all, bins=wb, alpha=0.6, label="before")
    axes[1].hist(w_sel, bins=wb, alpha=0.8, label="after")
    axes[1].set_title("caption length (words)")
    axes[1].legend()
    sizes = np.bincount(res.cluster, minlength=res.n_clusters)
    kept = np.bincount(res.cluster[res.selected], minlength=res.n_clusters)
    order = np.argsort(-sizes)
    axes[2].bar(np.arange(res.n_clusters), sizes[order], label="pairs")
    axes[2].bar(np.arange(res.n_clusters), kept[order], label="selected")
    axes[2].set_title("clusters (codebook): size and selected")
    axes[2].legend()
    out["distributions"] = _png(fig)
    plt.close(fig)
    return out


def evaluation_plot(evaluation: pl.DataFrame) -> str:
    """Base64 PNG: one bar chart per metric, a bar per training set (mean; the error bar is the 95% interval over
    seeds and test queries, or ± sd for a run recorded before intervals)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from caption_assets.curation_eval.metrics import HEADLINE

    metrics = list(dict.fromkeys(evaluation["metric"]))
    sets = list(dict.fromkeys(evaluation["training_set"]))
    colours = plt.get_cmap("tab10").colors
    with_ci = "ci_lo" in evaluation.columns and evaluation["ci_lo"].null_count() == 0
    cols = 6
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, min(cols, len(metrics)), figsize=(2.6 * min(cols, len(metrics)), 3.4 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        part = {r["training_set"]: r for r in evaluation.filter(pl.col("metric") == metric).iter_rows(named=True)}
        means = np.array([100 * part[t]["mean"] if t in part else 0.0 for t in sets])
        if with_ci:
            lo = np.array([100 * part[t]["ci_lo"] if t in part else 0.0 for t in sets])
            hi = np.array([100 * part[t]["ci_hi"] if t in part else 0.0 for t in sets])
            err = np.vstack([np.clip(means - lo, 0, None), np.clip(hi - means, 0, None)])
        else:
            err = np.array([100 * part[t]["sd"] if t in part else 0.0 for t in sets])
        ax.bar(range(len(sets)), means, yerr=err, capsize=3, color=[colours[i % 10] for i in range(len(sets))])
        ax.set_title(metric + (" (headline)" if metric == HEADLINE else ""), fontsize=9, fontweight="bold" if metric == HEADLINE else "normal")
        ax.set_xticks(range(len(sets)), sets, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("%", fontsize=8)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    out = _png(fig)
    plt.close(fig)
    return out


def table_html(df: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td{'' if isinstance(v, (int, float)) else ' class=t'}>{html.escape(f'{v:.4g}' if isinstance(v, float) else ('' if v is None else str(v)))}</td>" for v in row) + "</tr>"
        for row in df.iter_rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def images_html(images: dict[str, str]) -> str:
    return "".join(f'<figure><img alt="{html.escape(k)}" src="data:image/png;base64,{v}"/></figure>' for k, v in images.items()) or "<p>No compressed dataset yet.</p>"


def evaluation_html(evaluation: pl.DataFrame, truth: pl.DataFrame, diffs: pl.DataFrame | None = None) -> str:
    """The report's "Does curation help?" section (empty when curation_eval has not run)."""
    if evaluation.is_empty():
        return ""
    from caption_assets.curation_eval.headline import differences_table, headline, wide_table

    diffs = diffs if diffs is not None else pl.DataFrame()
    recipe = evaluation["recipe"][0] if "recipe" in evaluation.columns else ""
    stage = f"<h3>Each stage against the crawl's truth table</h3>{table_html(truth.select('stage', 'metric', 'value', 'n'))}" if not truth.is_empty() else ""
    paired = (f"<h3>curated minus each baseline (points, 95% interval)</h3>{table_html(differences_table(diffs))}") if not diffs.is_empty() else ""
    return (
        f'<section id="curation-eval"><h2>Does curation help? (curation_eval)</h2><p class="headline">{html.escape(headline(evaluation, diffs))}</p>'
        f"<p>Run {html.escape(str(evaluation['run_id'][0])[:8])}, {html.escape(str(evaluation['created_at'][0])[:16])}.</p>"
        f'<figure><img alt="curation_eval bars" src="data:image/png;base64,{evaluation_plot(evaluation)}"/></figure>'
        f"<p>Percent; bars are means over seeds, error bars the 95% interval over seeds and test queries; the same training recipe (model, steps, seeds) "
        f"and samples seen for every training set, tested on the world's held-out split. Metrics without a suffix query in the held-out "
        f"phrasing no caption source uses; <code>_canonical</code> ones in the caption grammar's own.</p>"
        f"{paired}{table_html(wide_table(evaluation))}<details><summary>recipe</summary><pre>{html.escape(recipe)}</pre></details>{stage}</section>"
    )


def drawn(name: str, draw: Callable[[], str], problems: list[str] | None = None) -> str:
    """One part of the report, or a note in its place saying why it could not be drawn: a part that
    fails (an odd row, a table missing from an older warehouse) never costs the rest of the page."""
    try:
        return draw()
    except Exception as exc:  # noqa: BLE001 - the note is the report's answer; the asset logs it
        why = f"{type(exc).__name__}: {exc}"
        if problems is not None:
            problems.append(f"{name}: {why}")
        return f'<p class="not-drawn">The {html.escape(name)} could not be drawn ({html.escape(why[:400])}).</p>'


def render_html(paths: dict[str, str], parts: dict[str, Callable[[], str]], problems: list[str] | None = None) -> str:
    """The page; ``parts`` draw its sections (comparison, distributions, evaluation, funnel, gallery), each on its own."""
    part = {name: drawn(name, draw, problems) for name, draw in parts.items()}
    links = "".join(f"<li>{html.escape(k)}: <code>{html.escape(v)}</code></li>" for k, v in paths.items())
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>caption-assets quality report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:1200px}}table{{border-collapse:collapse;margin:1rem 0}}
td,th{{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}}th{{background:#f3f3f3}}td:first-child,th:first-child,td.t{{text-align:left}}
img{{max-width:100%}}.not-drawn{{color:#a33}}</style></head><body>
<h1>Caption dataset quality report</h1><p>Generated {when}.</p>
<h2>Before / after compression</h2>{part.get("comparison", "")}
<h2>Distributions</h2>{part.get("distributions", "")}
{part.get("evaluation", "")}
<h2>Funnel (all stages, all shards)</h2>{part.get("funnel", "")}
{part.get("gallery", "")}
<h2>Where things are</h2><ul>{links}</ul>
</body></html>"""
