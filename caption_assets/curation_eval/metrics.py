"""The figures ``curation_eval`` reports, by name: light enough for the definitions to import."""

BASE_METRICS = ("t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5", "zeroshot_shape_acc", "zeroshot_colour_acc")
CANONICAL = "_canonical"  # suffix of the figures measured with the grammar's own phrasing
METRICS = (*BASE_METRICS, *(m + CANONICAL for m in BASE_METRICS))
HEADLINE = "t2i_r1"  # text->image R@1, queries in the held-out phrasing
