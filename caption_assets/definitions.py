"""The Dagster code location: assets, checks, jobs, sensors and resources, configured from settings."""

from __future__ import annotations

import os

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus, Definitions, EnvVar, in_process_executor, multiprocess_executor

from caption_assets.assets.alignment_levels import build_alignment_levels
from caption_assets.assets.compressed import build_compressed_dataset
from caption_assets.assets.evaluation import build_curation_eval
from caption_assets.assets.experts import build_vision_expert_tags
from caption_assets.assets.fusion import build_fused_captions
from caption_assets.assets.raw_pairs import raw_pairs, raw_pairs_reconcile
from caption_assets.assets.recaption import build_recaptioned_pairs
from caption_assets.assets.reward_model import build_alignment_reward_model
from caption_assets.assets.scored_pairs import build_scored_pairs
from caption_assets.jobs import WITHOUT_MODELS, compress_job, eval_job, ingest_job, levels_job, reward_model_job, shard_chain_job, shard_models_job, shared_models_job, with_executor
from caption_assets.placement import LIMIT_TAG
from caption_assets.ray_placement import RAY_HOOKS
from caption_assets.schedules import build_schedules
from caption_assets.sensors import build_crawl_sensor
from caption_assets.warehouse_sensor import build_warehouse_compaction_sensor
from caption_assets.settings import Settings, load_settings
from resources import AnnotationSource, DuplicateIndex, CaptionFuser, Captioner, ClipScorer, VisionExperts, CrawlSource, LakeStorage, QualityWarehouse


def fuser_config(settings: Settings) -> dict[str, object]:
    """Endpoint and key come from the environment at run time (EnvVar), never baked into the definitions."""
    config: dict[str, object] = dict(settings.fuser)
    if "CAPTION_ASSETS_FUSER_URL" in settings.env:
        config["endpoint_url"] = EnvVar("CAPTION_ASSETS_FUSER_URL")
    if "CAPTION_ASSETS_FUSER_API_KEY" in settings.env:
        config["api_key"] = EnvVar("CAPTION_ASSETS_FUSER_API_KEY")
    return config


def build_resources(settings: Settings) -> dict[str, object]:
    models = str(settings.data_dir / "models")
    return {
        "crawl": CrawlSource(crawl_dir=str(settings.crawl_dir)),
        "lake": LakeStorage(root=str(settings.lake_dir)),
        "warehouse": QualityWarehouse(path=str(settings.warehouse_path)),
        "duplicates": DuplicateIndex(path=str(settings.duplicate_index_path)),
        "annotations": AnnotationSource(folder=str(settings.annotations_dir)),
        "clip": ClipScorer(**settings.clip, models_dir=models),
        "captioner": Captioner(**settings.captioner, models_dir=models),
        "experts": VisionExperts(**settings.experts),
        "fuser": CaptionFuser(**fuser_config(settings)),
    }


MODEL_LIBRARIES = "caption_assets.model_libraries"

# The assets that load a model, built per settings: their pool and executor tags come from caption_assets/placement.py.
MODEL_STEPS = (build_alignment_reward_model, build_alignment_levels, build_scored_pairs, build_recaptioned_pairs, build_vision_expert_tags, build_fused_captions)


def build_definitions(settings: Settings | None = None) -> Definitions:
    """Everything from ``settings``: assets, run-config defaults, placement, resources, executor. Sets no environment."""
    settings = settings or load_settings()
    # curation_eval tests on the procedural world's held-out split: on for world crawls (demo), off for real ones.
    evaluate = bool(settings.evaluation.get("enabled", False))
    light = build_executor(settings, models=False)  # for the jobs whose steps load no model
    hooks = RAY_HOOKS if settings.executor == "ray" else None  # each step records the node it ran on
    return Definitions(
        assets=[raw_pairs, *(build(settings) for build in MODEL_STEPS), build_compressed_dataset(settings), *([build_curation_eval(settings)] if evaluate else [])],
        asset_checks=[raw_pairs_reconcile],
        jobs=[with_executor(job, light if job in WITHOUT_MODELS else None, hooks) for job in
              (ingest_job, shard_chain_job, shard_models_job, reward_model_job, levels_job, shared_models_job, compress_job, *([eval_job] if evaluate else []))],
        sensors=[
            build_crawl_sensor(settings.automation),
            build_warehouse_compaction_sensor(settings.automation),
            AutomationConditionSensorDefinition(
                "shard_automation",
                target=AssetSelection.all(),
                default_status=DefaultSensorStatus.RUNNING if settings.automation else DefaultSensorStatus.STOPPED,
                description="Declarative automation: each per-shard stage follows its upstream shard (AutomationCondition.eager).",
            ),
        ],
        schedules=build_schedules(settings.automation),
        resources=build_resources(settings),
        executor=build_executor(settings),
    )


def build_executor(settings: Settings, models: bool = True):
    """Local default: multiprocess, bounded, GPU steps one at a time. On a cluster: one pod per step.
    ``in_process``: every step in the run worker's process (one model load per run; no step isolation)."""
    if settings.executor == "in_process":
        return in_process_executor
    if settings.executor == "ray":
        return ray_step_executor(settings)
    if settings.executor == "k8s":
        import yaml
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(yaml.safe_load(settings.k8s_executor_config.read_text()), name="k8s_job_executor")
    return multiprocess_executor.configured(local_executor_config(settings, models))


def ray_step_executor(settings: Settings):
    """One Ray job per step on the cluster at ``ray_address`` (dagster-ray). Each step's CPU and GPU request is its own
    ``dagster-ray/config`` tag (``placement.py``); Ray queues a step until a node has them. The step process rebuilds
    these definitions from the same settings, so the settings' environment travels with every step."""
    from dagster_ray import ray_executor

    forwarded = sorted(k for k in os.environ if k.startswith("CAPTION_ASSETS_") and k != "CAPTION_ASSETS_RAY_NODE")
    return ray_executor.configured(
        {"ray": {"address": settings.ray_address, "env_vars": forwarded}},
        name="ray_executor",
    )


def local_executor_config(settings: Settings, models: bool = True) -> dict[str, object]:
    """Steps fork from a server that imported the definitions, and the model libraries when the job's steps load models,
    once per run: a step starts in a fraction of a second instead of re-importing torch and open_clip."""
    key, value = LIMIT_TAG
    return {
        "max_concurrent": settings.max_concurrent,
        "tag_concurrency_limits": [{"key": key, "value": value, "limit": 1}],
        "start_method": {"forkserver": {"preload_modules": [MODEL_LIBRARIES if models else "caption_assets.definitions"]}},
    }


defs = build_definitions()
