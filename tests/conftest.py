from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


@pytest.fixture
def settings_for(tmp_path: Path):
    """Settings pointing the whole chain at a temporary crawl folder and data folder."""
    from caption_assets.settings import load_settings

    def make(crawl: Path, profile: str = "demo", **env: str):
        return load_settings({"CAPTION_ASSETS_PROFILE": profile, "CAPTION_ASSETS_CRAWL_DIR": str(crawl), "CAPTION_ASSETS_DATA_DIR": str(tmp_path / "data"), **env})

    return make


@pytest.fixture
def instance():
    from dagster import DagsterInstance

    with DagsterInstance.ephemeral() as inst:
        yield inst
