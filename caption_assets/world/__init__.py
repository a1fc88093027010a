"""A procedural world whose truth is known, so the chain's quality can be measured on this machine.

- ``scene``: scenes of 1-3 coloured shapes drawn with Pillow, each a dataclass that is its own truth;
- ``captions``: the caption grammar (true paraphrases, partial and one-attribute-wrong variants) and a
  parser from any caption back to (colour, shape) mentions;
- ``crawl``: shards in every input format with web noise at set rates, truth written beside the crawl;
- ``data``, ``train_clip``, ``train_captioner``, ``evaluate``, ``models``: the demo models trained on
  the world's training split and their held-out figures.

Pure code: nothing here imports Dagster, and no pipeline stage imports the truth.
"""
