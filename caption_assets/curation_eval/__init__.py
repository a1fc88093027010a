"""Does the curated dataset train a better model than the crawl it came from? (DataComp in miniature)

- ``training_sets``: curated, curated_alt_text, random_same_size, clip_score_top, all_raw (and a bad control);
- ``recipe``: the one fixed training recipe (``bow_clip``'s bag-of-words model by default, or a small open_clip CLIP), identical for every set;
- ``testset``: the world's held-out test split and the six figures (retrieval R@1/R@5, zero-shot shape/colour);
- ``run``: decode once, train and measure every (set, seed) in worker processes, summarise mean ± sd;
- ``stage_truth``: each stage judged against the crawl's truth table (only this package reads it);
- ``headline``: the one-line verdict and the table.

Pure code: the Dagster layer is ``caption_assets/assets/evaluation.py``.
"""
