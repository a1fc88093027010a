"""Placement: every asset that loads a model resource runs where model steps run, and nothing else does."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

import resources
from caption_assets.definitions import build_definitions, local_executor_config
from caption_assets.placement import INDEX_RESOURCE, LIMIT_TAG, POOL, model_step
from caption_assets.settings import PROJECT_ROOT, load_settings

MODEL_ASSETS = {"alignment_reward_model", "alignment_levels", "scored_pairs", "recaptioned_pairs", "vision_expert_tags", "fused_captions"}


def op_tags(assets_def) -> dict[str, object]:
    """The step's tags as an executor reads them (dagster stores dict values as JSON)."""
    return {k: json.loads(v) if v.startswith("{") else v for k, v in assets_def.node_def.tags.items()}


def placements(settings) -> dict[str, tuple[str | None, dict[str, object]]]:
    """Asset -> (pool, op tags, whether it takes a model resource) for every asset of the definitions."""
    defs = build_definitions(settings)
    models = {key for key, r in defs.resources.items() if type(r).__name__ in resources._MODEL_RESOURCES}
    assert models == {"clip", "captioner", "experts", "fuser"}  # the resources that import torch / transformers / an LLM
    graph = defs.resolve_asset_graph()
    out = {}
    for key in graph.get_all_asset_keys():
        assets_def = graph.assets_def_for_key(key)
        out[key.to_user_string()] = (assets_def.node_def.pool, op_tags(assets_def), bool(assets_def.required_resource_keys & models))
    return out


@pytest.mark.parametrize("profile", ["demo", "production"])
def test_every_step_that_takes_a_model_resource_gets_the_helpers_pool_and_tags(profile):
    settings = load_settings({"CAPTION_ASSETS_PROFILE": profile})
    expected = model_step(settings)
    found = placements(settings)
    assert {name for name, (_, _, loads_model) in found.items() if loads_model} == MODEL_ASSETS
    for name, (pool, tags, loads_model) in found.items():
        if loads_model:
            assert pool == POOL and tags == expected["op_tags"], name
        else:  # ingest, compression, evaluation: no GPU request, no model-step pool, no executor limit; one CPU share on Ray
            assert pool is None and not set(tags) & (set(expected["op_tags"]) - {"dagster-ray/config"}), name
            assert tags["dagster-ray/config"]["num_cpus"] == 1 and "num_gpus" not in tags["dagster-ray/config"], name
    # ingest alone takes the head node's duplicate-index unit (one SQLite writer, on one node's disk)
    assert found["raw_pairs"][1]["dagster-ray/config"]["resources"] == {INDEX_RESOURCE: 1}
    assert all("resources" not in tags["dagster-ray/config"] for name, (_, tags, _) in found.items() if name != "raw_pairs")
    # auto devices: a cluster gives every model step a GPU
    tags = found["alignment_levels"][1]
    assert tags["dagster-k8s/config"]["container_config"]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert tags["dagster-ray/config"]["num_gpus"] == 1


def test_models_pinned_to_the_cpu_ask_for_cpus_only_and_keep_the_pool():
    base = load_settings({"CAPTION_ASSETS_PROFILE": "demo", "CAPTION_ASSETS_DEVICE": "cpu"})
    assert placements(base)["scored_pairs"][1]["dagster-ray/config"]["num_gpus"] == 1  # the captioner is still on `auto`
    assert placements(base)["fused_captions"][1]["dagster-ray/config"]["num_gpus"] == 1  # and the demo's world-fuser
    cpu = dataclasses.replace(base, captioner={**base.captioner, "device": "cpu"}, fuser={**base.fuser, "device": "cpu"})
    found = placements(cpu)
    for name in MODEL_ASSETS:
        pool, tags, _ = found[name]
        assert pool == POOL and tags[LIMIT_TAG[0]] == LIMIT_TAG[1]
        assert "limits" not in tags["dagster-k8s/config"]["container_config"]["resources"]
        assert tags["dagster-ray/config"] == {"num_cpus": cpu.step_cpus, "num_gpus": 0}
    # a local LLM fuser on `auto` brings the GPU back
    llm = dataclasses.replace(cpu, fuser={"backend": "transformers", "model": "some/llm", "device": "auto"})
    assert placements(llm)["fused_captions"][1]["dagster-ray/config"]["num_gpus"] == 1


def test_the_executors_limit_the_tag_the_helper_sets():
    key, value = LIMIT_TAG
    settings = load_settings({"CAPTION_ASSETS_PROFILE": "demo"})
    assert {"key": key, "value": value, "limit": 1} in local_executor_config(settings)["tag_concurrency_limits"]
    k8s = yaml.safe_load((PROJECT_ROOT / "deploy/k8s/executor.yaml").read_text())
    assert any(lim["key"] == key and lim["value"] == value for lim in k8s["tag_concurrency_limits"])


def test_step_resources_come_from_the_settings():
    """A CPU-only cluster: CAPTION_ASSETS_STEP_GPUS=0 drops every GPU request, whatever the devices say;
    the CPU share is the profile's (demo 1, production 4) or the environment's."""
    assert load_settings({"CAPTION_ASSETS_PROFILE": "demo"}).step_cpus == 1
    assert load_settings({"CAPTION_ASSETS_PROFILE": "production"}).step_cpus == 4
    settings = load_settings({"CAPTION_ASSETS_PROFILE": "production", "CAPTION_ASSETS_STEP_GPUS": "0", "CAPTION_ASSETS_STEP_CPUS": "3"})
    for name in MODEL_ASSETS:
        tags = placements(settings)[name][1]
        assert tags["dagster-ray/config"] == {"num_cpus": 3, "num_gpus": 0}, name
        assert "limits" not in tags["dagster-k8s/config"]["container_config"]["resources"]
    with pytest.raises(Exception, match="CAPTION_ASSETS_STEP_GPUS"):
        load_settings({"CAPTION_ASSETS_STEP_GPUS": "2"})


def test_the_ray_executor_takes_its_address_and_environment_from_the_settings(monkeypatch):
    """Steps rebuild the definitions from CAPTION_ASSETS_* on their node, so those travel with each Ray job; the executor
    itself asks for no CPUs or GPUs (an executor-wide num_gpus would override every step's tag)."""
    pytest.importorskip("dagster_ray")
    from caption_assets.definitions import build_executor

    monkeypatch.setenv("CAPTION_ASSETS_PROFILE", "production")
    monkeypatch.setenv("CAPTION_ASSETS_RAY_NODE", "head")  # the node's own name is the node's, never forwarded
    settings = load_settings({"CAPTION_ASSETS_PROFILE": "production", "CAPTION_ASSETS_EXECUTOR": "ray",
                              "CAPTION_ASSETS_RAY_ADDRESS": "http://ray-head:8265"})
    executor = build_executor(settings)
    assert executor.name == "ray_executor"
    resolved = executor.apply_config_mapping({})
    assert resolved.success
    cfg = resolved.value["config"]["ray"]
    assert cfg["address"] == "http://ray-head:8265"
    assert "CAPTION_ASSETS_PROFILE" in cfg["env_vars"] and "CAPTION_ASSETS_RAY_NODE" not in cfg["env_vars"]
    assert cfg["num_gpus"] is None and cfg["num_cpus"] is None and cfg["resources"] is None
    with pytest.raises(Exception, match="CAPTION_ASSETS_RAY_ADDRESS"):
        load_settings({"CAPTION_ASSETS_RAY_ADDRESS": "ray-head:6379"})


def test_a_ray_node_tag_lost_to_a_concurrent_writer_is_put_back(monkeypatch: pytest.MonkeyPatch):
    """``add_run_tags`` rewrites the run body it read a moment before: another step of the run finishing at the same
    time can write back a body without this step's tag. The hook checks and writes it again."""
    from types import SimpleNamespace

    from caption_assets import ray_placement

    class LossyInstance:
        def __init__(self) -> None:
            self.tags = {"caption_assets/ray/other": "worker-1 job-0"}
            self.writes = 0

        def add_run_tags(self, run_id: str, tags: dict) -> None:
            self.writes += 1
            stale = dict(self.tags)
            self.tags.update(tags)
            if self.writes == 1:  # the other step's write, from a body read before ours, lands just after
                self.tags = stale

        def get_run_by_id(self, run_id: str):
            return SimpleNamespace(tags=dict(self.tags))

    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"metadata": {"job_submission_id": "job-7"}}))
    monkeypatch.setenv(ray_placement.NODE_ENV, "head")
    instance = LossyInstance()
    ray_placement._record(SimpleNamespace(step_key="alignment_levels", run_id="r", instance=instance), settle_s=0.0)
    assert instance.tags == {"caption_assets/ray/other": "worker-1 job-0", "caption_assets/ray/alignment_levels": "head job-7"}
    assert instance.writes == 2
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    ray_placement._record(SimpleNamespace(step_key="x", run_id="r", instance=instance), settle_s=0.0)
    assert instance.writes == 2  # not a Ray job: nothing to record
