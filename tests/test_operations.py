"""Operations: asset metadata, automation, schedules, executor and pools, deploy/ config, config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster import AssetKey

from caption_assets.definitions import build_definitions
from caption_assets.schedules import partitions_needing_work, shard_stages
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

    assert build_definitions(load_settings({"CAPTION_ASSETS_PROFILE": "demo"})).resolve_job_def("shard_chain").executor_def.name == "in_process"
    settings = load_settings({"CAPTION_ASSETS_PROFILE": "demo", "CAPTION_ASSETS_MAX_CONCURRENT": "3", "CAPTION_ASSETS_EXECUTOR": "multiprocess"})
    defs = build_definitions(settings)
    assert defs.resolve_job_def("shard_chain").executor_def.name == "multiprocess"
    config = local_executor_config(settings)
    assert config["max_concurrent"] == 3 and config["tag_concurrency_limits"] == [{"key": "gpu", "value": "true", "limit": 1}]
    assert process_config(multiprocess_executor.config_schema.config_type, config).success
    # steps fork from a server that imported the model libraries only in jobs that have model steps
    preload = lambda models: local_executor_config(settings, models)["start_method"]["forkserver"]["preload_modules"]  # noqa: E731
    assert preload(False) == ["caption_assets.definitions"] and preload(True) == ["caption_assets.model_libraries"]
    executors = {j.name: j.executor_def for j in defs.resolve_all_job_defs()}
    assert executors["ingest_shard"] is executors["compress_dataset"]
    assert executors["shard_models"] is executors["shared_models"] is executors["__ASSET_JOB"] is not executors["ingest_shard"]
    names = {s.name for s in defs.schedules}
    assert names == {"nightly_shard_backfill", "daily_compressed_dataset"}


def test_nightly_backfill_picks_missing_and_stale_partitions(graph):
    stages = shard_stages(graph)
    assert list(stages) == ["raw_pairs", "scored_pairs", "recaptioned_pairs", "vision_expert_tags", "fused_captions"]
    assert stages["scored_pairs"] == ("alignment_levels", "alignment_reward_model", "raw_pairs")  # the cross-shard inputs too
    latest = {
        "raw_pairs": {"a": 1, "b": 2, "c": 3, "d": 40},
        "scored_pairs": {"a": 10, "b": 11, "c": 12, "d": 13},
        "recaptioned_pairs": {"a": 20, "b": 21, "c": 22, "d": 23},
        "vision_expert_tags": {"a": 20, "b": 21, "d": 23},
        "fused_captions": {"a": 30, "b": 19, "d": 33},
    }
    since = {"alignment_levels": 5, "alignment_reward_model": 11}  # a new reward model since a was scored
    assert partitions_needing_work(stages, latest, since, ["a", "b", "c", "d", "e"]) == {
        "a": "stale scored_pairs: alignment_reward_model is newer",
        "b": "stale fused_captions: recaptioned_pairs is newer",
        "c": "missing vision_expert_tags",
        "d": "stale scored_pairs: raw_pairs is newer",
        "e": "missing raw_pairs",
    }
    assert "a" not in partitions_needing_work(stages, latest, {"alignment_reward_model": None}, ["a"])  # never trained: nothing to follow


def test_the_nightly_plan_follows_the_asset_graph_it_runs_in(tmp_path: Path, settings_for):
    """An asset added to the definitions (and a dependency on a new cross-shard input) changes the plan, no map to edit."""
    import contextvars

    # In a copied context: an instance entered here stays the process's definitions-state storage after it is
    # gone (DagsterInstance.__exit__ does not reset it), which would break later tests in this process.
    from dagster import DagsterInstance

    def check() -> None:
        with DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster_home")) as instance:  # schedules need a persistent instance
            check_plan_follows_the_graph(tmp_path, settings_for, instance)

    (tmp_path / "dagster_home").mkdir()
    contextvars.copy_context().run(check)


def check_plan_follows_the_graph(tmp_path: Path, settings_for, instance) -> None:
    from datetime import datetime, timezone

    from dagster import AssetMaterialization, Definitions, asset, build_schedule_context

    from caption_assets.definitions import build_resources
    from caption_assets.partitions import shards_partitions

    @asset(group_name="extra")
    def tag_vocabulary() -> None: ...

    @asset(partitions_def=shards_partitions, deps=["fused_captions", "tag_vocabulary"], tags={"scope": "shard"})
    def caption_audit() -> None: ...

    base = build_definitions(settings_for(tmp_path / "crawl"))
    extended = Definitions.merge(base, Definitions(assets=[tag_vocabulary, caption_audit]))
    resources = {k: v for k, v in build_resources(settings_for(tmp_path / "crawl")).items() if k in ("warehouse", "lake", "duplicates")}
    instance.add_dynamic_partitions("shards", ["a", "b"])
    record = lambda key, partition=None, version=None: instance.report_runless_asset_event(  # noqa: E731
        AssetMaterialization(key, partition=partition, tags={"dagster/data_version": version} if version else None))
    for stage in ("raw_pairs", "scored_pairs", "recaptioned_pairs", "vision_expert_tags", "fused_captions"):
        for p in ("a", "b"):
            record(stage, p)

    def nightly(defs: Definitions) -> dict[str, str]:
        context = build_schedule_context(instance=instance, resources=resources, repository_def=defs.get_repository_def(),
                                         scheduled_execution_time=datetime(2026, 11, 26, 2, tzinfo=timezone.utc))
        return {r.partition_key: r.tags["reason"] for r in defs.resolve_schedule_def("nightly_shard_backfill")(context)}

    assert nightly(base) == {}
    assert nightly(extended) == {"a": "missing caption_audit", "b": "missing caption_audit"}
    record("tag_vocabulary", version="v1")
    record("caption_audit", "a")
    record("caption_audit", "b")
    assert nightly(extended) == {}
    record("tag_vocabulary", version="v2")  # a new vocabulary: every audit is older than its input
    assert nightly(extended) == {p: "stale caption_audit: tag_vocabulary is newer" for p in ("a", "b")}
    record("caption_audit", "a")
    record("tag_vocabulary", version="v2")  # the same vocabulary again restales nothing
    assert nightly(extended) == {"b": "stale caption_audit: tag_vocabulary is newer"}
    assert nightly(base) == {}


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
