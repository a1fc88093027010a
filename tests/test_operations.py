"""Operations: asset metadata, automation, schedules, executor and pools, deploy/ config, config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster import AssetKey

from caption_assets.definitions import build_definitions
from caption_assets.schedules import partitions_needing_work
from caption_assets.settings import PROJECT_ROOT, SettingsError, load_settings

CHAIN = ["raw_pairs", "alignment_reward_model", "alignment_levels", "scored_pairs", "recaptioned_pairs", "vision_expert_tags", "fused_captions", "compressed_dataset"]


@pytest.fixture(scope="module")
def graph():
    return build_definitions(load_settings({"CAPTION_ASSETS_PROFILE": "demo"})).resolve_asset_graph()


def test_every_asset_is_described_owned_versioned_and_kinded(graph):
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == sorted([*CHAIN, "curation_eval"])
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description and len(node.description) > 40, key
        assert node.owners and node.kinds and node.code_version, key


def test_per_shard_stages_follow_upstream_and_gpu_steps_are_serialised(graph):
    for name in ("scored_pairs", "recaptioned_pairs", "vision_expert_tags", "fused_captions"):
        node = graph.get(AssetKey(name))
        assert node.automation_condition is not None and "eager" in (node.automation_condition.get_label() or "").lower() + node.automation_condition.name.lower()
        assert node.partitions_def is not None and node.partitions_def.name == "shards"
    for name in ("scored_pairs", "recaptioned_pairs"):
        assets_def = graph.assets_def_for_key(AssetKey(name))
        op = assets_def.node_def
        assert op.tags["gpu"] == "true" and "dagster-k8s/config" in op.tags
        assert op.pool == "gpu"
    assert graph.get(AssetKey("fused_captions")).assets_def.op.retry_policy.max_retries == 2


def test_curation_eval_follows_the_export_and_only_where_the_world_is():
    node = build_definitions(load_settings({"CAPTION_ASSETS_PROFILE": "demo"})).resolve_asset_graph().get(AssetKey("curation_eval"))
    assert node.group_name == "dataset" and AssetKey("compressed_dataset") in node.parent_keys
    production = build_definitions(load_settings({"CAPTION_ASSETS_PROFILE": "production"})).resolve_asset_graph()
    assert AssetKey("curation_eval") not in production.get_all_asset_keys()


def test_checks_of_every_stage_are_registered(graph):
    checks = {k.name for k in graph.asset_check_keys}
    assert {"raw_pairs_reconcile", "ratio_within_tolerance", "no_duplicate_keys", "export_matches_manifest", "exported_images_open", "curated_beats_random_same_size"} <= checks


def test_local_executor_is_bounded_multiprocess():
    from dagster._config import process_config
    from dagster import multiprocess_executor

    from caption_assets.definitions import local_executor_config

    settings = load_settings({"CAPTION_ASSETS_PROFILE": "demo", "CAPTION_ASSETS_MAX_CONCURRENT": "3"})
    defs = build_definitions(settings)
    assert defs.resolve_job_def("shard_chain").executor_def.name == "multiprocess"
    config = local_executor_config(settings)
    assert config["max_concurrent"] == 3 and config["tag_concurrency_limits"] == [{"key": "gpu", "value": "true", "limit": 1}]
    assert process_config(multiprocess_executor.config_schema.config_type, config).success
    names = {s.name for s in defs.schedules}
    assert names == {"nightly_shard_backfill", "daily_compressed_dataset"}


def test_nightly_backfill_picks_missing_and_stale_partitions():
    latest = {
        "raw_pairs": {"a": 1, "b": 2, "c": 3, "d": 40},
        "scored_pairs": {"a": 10, "b": 11, "c": 12, "d": 13},
        "recaptioned_pairs": {"a": 20, "b": 21, "c": 22, "d": 23},
        "vision_expert_tags": {"a": 20, "b": 21, "d": 23},
        "fused_captions": {"a": 30, "b": 19, "d": 33},
    }
    assert partitions_needing_work(latest, ["a", "b", "c", "d", "e"]) == {
        "b": "stale fused_captions",
        "c": "missing vision_expert_tags",
        "d": "stale scored_pairs",
        "e": "missing raw_pairs",
    }


def test_k8s_executor_config_validates_against_dagster_k8s():
    from dagster._config import process_config
    from dagster_k8s import k8s_job_executor

    config = yaml.safe_load((PROJECT_ROOT / "deploy/k8s/executor.yaml").read_text())
    result = process_config(k8s_job_executor.config_schema.config_type, config)
    assert result.success, result.errors
    defs = build_definitions(load_settings({"CAPTION_ASSETS_PROFILE": "demo", "CAPTION_ASSETS_EXECUTOR": "k8s"}))
    assert defs.resolve_job_def("shard_chain").executor_def.name == "k8s_job_executor"


def test_instance_config_validates_with_postgres_and_k8s_launcher(tmp_path: Path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    for var in ("DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD"):
        monkeypatch.setenv(var, "x")
    (tmp_path / "dagster.yaml").write_text((PROJECT_ROOT / "deploy/k8s/dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == "K8sRunLauncher" and "postgres" in config["storage"]
    import dagster_k8s  # noqa: F401 - the launcher class the config names is importable
    import dagster_postgres  # noqa: F401


def test_helm_values_point_at_this_code_location():
    values = yaml.safe_load((PROJECT_ROOT / "deploy/helm/values.yaml").read_text())
    dep = values["dagster-user-deployments"]["deployments"][0]
    assert dep["dagsterApiGrpcArgs"] == ["-m", "caption_assets.definitions"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    docker = (PROJECT_ROOT / "deploy/Dockerfile").read_text()
    assert f'"-p", "{dep["port"]}"' in docker and "caption_assets.definitions" in docker


@pytest.mark.parametrize(
    "env, setting",
    [
        ({"CAPTION_ASSETS_PROFILE": "staging"}, "CAPTION_ASSETS_PROFILE"),
        ({"CAPTION_ASSETS_CLIP_PRETRAINED": "/nowhere/clip.pt"}, "clip.pretrained"),
        ({"CAPTION_ASSETS_CAPTIONER": "/nowhere/captioner"}, "captioner.model"),
        ({"CAPTION_ASSETS_FUSER_BACKEND": "magic"}, "fuser.backend"),
        ({"CAPTION_ASSETS_EXECUTOR": "slurm"}, "CAPTION_ASSETS_EXECUTOR"),
        ({"CAPTION_ASSETS_MAX_CONCURRENT": "0"}, "CAPTION_ASSETS_MAX_CONCURRENT"),
    ],
)
def test_config_errors_fail_at_load_with_one_line_naming_the_setting(env, setting):
    with pytest.raises(SettingsError) as err:
        load_settings({"CAPTION_ASSETS_PROFILE": "demo", **env})
    assert setting in str(err.value) and "\n" not in str(err.value)
