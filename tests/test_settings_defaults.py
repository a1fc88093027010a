"""Settings are the one source of defaults: definitions built for a profile carry that profile's, whatever the process's environment says."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from caption_assets.settings import PROFILES_DIR, PROJECT_ROOT

# Runs in a fresh interpreter whose environment names one profile, and builds definitions for the other.
PROBE = """
import json, os, sys
import dagster, open_clip, polars, torch  # libraries that set their own variables on import (jemalloc, inductor, tokenizers)
before = dict(os.environ)
from dagster import AssetKey
from caption_assets.definitions import build_definitions
from caption_assets.settings import load_settings

defs = build_definitions(load_settings({"CAPTION_ASSETS_PROFILE": sys.argv[1]}))
graph = defs.resolve_asset_graph()

def defaults(asset):
    fields = graph.assets_def_for_key(AssetKey(asset)).op.config_field.config_type.fields
    return {name: f.default_value if f.default_provided else None for name, f in fields.items()}

r = defs.resources
print(json.dumps({
    "scored_pairs": defaults("scored_pairs"),
    "compressed_dataset": defaults("compressed_dataset"),
    "fused_captions": defaults("fused_captions"),
    "curation_eval": defaults("curation_eval") if graph.has(AssetKey("curation_eval")) else None,
    "clip": [r["clip"].model_name, r["clip"].pretrained],
    "captioner": r["captioner"].model,
    "fuser": r["fuser"].backend,
    "assets": sorted(k.to_user_string() for k in graph.get_all_asset_keys()),
    "environment_changed": sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)),
}))
"""


def probe(process_profile: str, built_profile: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "CAPTION_ASSETS_"))}
    env["CAPTION_ASSETS_PROFILE"] = process_profile
    out = subprocess.run([sys.executable, "-c", PROBE, built_profile], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def profile(name: str) -> dict:
    return yaml.safe_load((PROFILES_DIR / f"{name}.yaml").read_text())


def test_production_definitions_in_a_demo_process_carry_every_production_default():
    got = probe("demo", "production")
    prod, demo = profile("production"), profile("demo")
    # compression: every value the production profile names, none of the demo's
    for name, value in prod["compress"].items():
        assert got["compressed_dataset"][name] == value, name
    assert got["compressed_dataset"]["target_ratio"] == 0.15 != demo["compress"]["target_ratio"]
    assert got["compressed_dataset"]["samples_per_shard"] == 10000
    # scoring: production names no CLIP floor, so the relative one (drop the bottom 20%), not the demo's absolute floor
    assert "scoring" not in prod
    assert got["scored_pairs"]["min_clip_score"] is None and got["scored_pairs"]["drop_clip_quantile"] == 0.2
    # models
    assert got["clip"] == [prod["clip"]["model_name"], prod["clip"]["pretrained"]] == ["ViT-B-32", "laion2b_s34b_b79k"]
    assert got["captioner"] == prod["captioner"]["model"] and got["fuser"] == "openai"
    # fusion: production names no guardrail margin, so the code's 0.02, not the demo's tuned one
    assert "fusion" not in prod and got["fused_captions"]["score_margin"] == 0.02 != demo["fusion"]["score_margin"]
    assert "curation_eval" not in got["assets"]  # evaluation.enabled is production's (off)
    assert got["environment_changed"] == []  # importing and building sets no environment variable


def test_demo_definitions_in_a_production_process_carry_the_demos_defaults():
    got = probe("production", "demo")
    demo = profile("demo")
    assert got["scored_pairs"]["min_clip_score"] == demo["scoring"]["min_clip_score"] == 0.234
    assert got["scored_pairs"]["drop_clip_quantile"] == 0.0
    assert {k: got["compressed_dataset"][k] for k in demo["compress"]} == demo["compress"]
    assert {k: got["fused_captions"][k] for k in demo["fusion"]} == demo["fusion"]
    assert got["clip"][0] == "world-clip" and "curation_eval" in got["assets"]
    assert {k: got["curation_eval"][k] for k in demo["evaluation"] if k != "enabled"} == {k: v for k, v in demo["evaluation"].items() if k != "enabled"}
    assert got["environment_changed"] == []


def test_a_profile_key_no_config_has_fails_when_the_definitions_are_built():
    import dataclasses

    from caption_assets.definitions import build_definitions
    from caption_assets.settings import SettingsError, load_settings

    settings = load_settings({"CAPTION_ASSETS_PROFILE": "demo"})
    with pytest.raises(SettingsError, match="compress: unknown setting.*target_ratoi"):
        build_definitions(dataclasses.replace(settings, compress={**settings.compress, "target_ratoi": 0.1}))


def test_an_unknown_candidate_selection_fails_at_load_with_one_line():
    from caption_assets.settings import SettingsError, load_settings, validate_sections

    settings = load_settings({"CAPTION_ASSETS_PROFILE": "demo"})
    assert settings.captioner["selection"] == "consensus"
    sections = {"captioner": {**settings.captioner, "selection": "vote"}, "fuser": settings.fuser}
    with pytest.raises(SettingsError, match=r"captioner.selection='vote' must be clip or consensus") as err:
        validate_sections("demo", settings.clip, sections)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("margin", [-0.01, 1.5, "wide"])
def test_a_fusion_margin_out_of_range_fails_at_load(margin):
    from caption_assets.settings import SettingsError, load_settings, validate_sections

    settings = load_settings({"CAPTION_ASSETS_PROFILE": "demo"})
    sections = {"captioner": settings.captioner, "fuser": settings.fuser, "fusion": {"score_margin": margin}}
    with pytest.raises(SettingsError, match=r"fusion.score_margin=.* must be a cosine difference in \[0, 1\)"):
        validate_sections("demo", settings.clip, sections)


@pytest.mark.parametrize("share", [0, 1.5, "most"])
def test_an_export_cap_out_of_range_fails_at_load(share):
    from caption_assets.settings import SettingsError, load_settings, validate_sections

    settings = load_settings({"CAPTION_ASSETS_PROFILE": "demo"})
    sections = {"captioner": settings.captioner, "fuser": settings.fuser, "compress": {**settings.compress, "max_ingested_share": share}}
    with pytest.raises(SettingsError, match=r"compress.max_ingested_share=.* must be in \(0, 1\]"):
        validate_sections("demo", settings.clip, sections)
