"""open_clip models by config name: register an architecture, build it untrained.

Light on purpose (open_clip and torch only, no Dagster): the model resource, the demo-model training
script and curation_eval's worker processes all use it.
"""

from __future__ import annotations

import copy
import logging
from typing import Any


def register_config(name: str, config: dict[str, Any]) -> str:
    """Make an architecture known to open_clip under ``name`` (its model-config registry); returns ``name``."""
    from open_clip.factory import _MODEL_CONFIGS

    if name not in _MODEL_CONFIGS:
        _MODEL_CONFIGS[name] = copy.deepcopy(config)
    return name


def untrained_clip(name: str):
    """A randomly initialised open_clip model of a registered config (open_clip's "no pretrained weights" warning muted)."""
    import open_clip

    logging.disable(logging.WARNING)  # random weights are the point: they are about to be trained or saved as a demo
    try:
        return open_clip.create_model(name, pretrained=None)
    finally:
        logging.disable(logging.NOTSET)
