"""The figures ``curation_eval`` reports, by name: light enough for the definitions to import."""

BASE_METRICS = ("t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5", "zeroshot_shape_acc", "zeroshot_colour_acc")
CANONICAL = "_canonical"  # suffix of the figures measured with the grammar's own phrasing
METRICS = (*BASE_METRICS, *(m + CANONICAL for m in BASE_METRICS))
# text->image R@5, queries in the held-out phrasing. R@1 is the companion: with a few hundred training pairs it
# sits within a few points of the floor (1 in 500) for every set, where R@5 still tells the sets apart.
HEADLINE, COMPANION = "t2i_r5", "t2i_r1"
LABELS = {"t2i_r1": "text->image R@1", "t2i_r5": "text->image R@5", "i2t_r1": "image->text R@1", "i2t_r5": "image->text R@5"}
