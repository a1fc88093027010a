"""Run-config defaults from the settings that build the definitions, never from the importing process.

A ``Config`` class names its fields with plain fallbacks; ``with_defaults`` derives, when
``build_definitions(settings)`` runs, the subclass whose defaults are a profile section's values. That
subclass is what the UI's launchpad shows and what a run gets for a field its config leaves out, so
definitions built for ``production`` carry production's thresholds whatever ``CAPTION_ASSETS_PROFILE``
the process was started with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic
from dagster import Config

from caption_assets.settings import SettingsError

C = TypeVar("C", bound=Config)


def with_defaults(base: type[C], section: Mapping[str, Any], where: str) -> type[C]:
    """``base`` with the defaults ``section`` gives; a key ``base`` does not have is a typo and fails here."""
    unknown = sorted(set(section) - set(base.model_fields))
    if unknown:
        raise SettingsError(f"{where}: unknown setting(s) {', '.join(unknown)} (one of {', '.join(base.model_fields)})")
    fields: dict[str, Any] = {name: (base.model_fields[name].annotation, value) for name, value in section.items()}
    return pydantic.create_model(base.__name__, __base__=base, __module__=base.__module__, **fields)
