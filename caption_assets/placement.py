"""Where model steps run: one pool and one set of executor tags for every asset that loads a model resource.

Each executor reads its own tag: the local multiprocess executor and ``k8s_job_executor`` limit steps
tagged ``gpu=true`` (``tag_concurrency_limits``), dagster-k8s gives the step pod the resources in
``dagster-k8s/config``, and a Ray executor (dagster-ray) reads ``dagster-ray/config``. The ``gpu`` pool
bounds model steps across runs (the instance's ``concurrency.pools``). Assets ask ``model_step`` for
all of it, so a new model asset cannot be placed differently from the others.
"""

from __future__ import annotations

from typing import Any

from caption_assets.settings import Settings

POOL = "gpu"
LIMIT_TAG = ("gpu", "true")  # executors' tag_concurrency_limits key: one model step at a time per device
STEP_MEMORY = "16Gi"
# Ray: a model-free step (ingest, compression, checks) takes one CPU share, so the cluster spreads steps over
# its nodes (a job that asks for nothing runs on the head node). Ingest also takes the head node's one
# ``duplicate_index`` unit: the SQLite index is written by one step at a time, always from the same host, so no
# file lock between machines is relied on (``caption-assets cluster up`` gives the head that resource).
INDEX_RESOURCE = "duplicate_index"
LIGHT_STEP_TAGS = {"dagster-ray/config": {"num_cpus": 1}}
INGEST_STEP_TAGS = {"dagster-ray/config": {"num_cpus": 1, "resources": {INDEX_RESOURCE: 1}}}


def uses_gpu(settings: Settings) -> bool:
    """A GPU is asked for unless every model is pinned to the CPU: ``auto`` means CUDA wherever the step lands.
    ``execution.step_gpus`` (``CAPTION_ASSETS_STEP_GPUS``) overrides: 0 on a cluster without GPUs, 1 to insist."""
    if settings.step_gpus is not None:
        return settings.step_gpus > 0
    devices = [settings.clip.get("device", "auto"), settings.captioner.get("device", "auto")]
    if settings.fuser.get("backend") == "transformers":  # a local LLM; rules and an endpoint need no device
        devices.append(settings.fuser.get("device", "auto"))
    return any(str(d) != "cpu" for d in devices)


def model_step(settings: Settings) -> dict[str, Any]:
    """``@asset`` keyword arguments (``pool``, ``op_tags``) for a step that loads CLIP, the captioner or the fuser."""
    gpu = uses_gpu(settings)
    resources: dict[str, Any] = {"requests": {"cpu": str(settings.step_cpus), "memory": STEP_MEMORY}}
    if gpu:
        resources["limits"] = {"nvidia.com/gpu": "1"}
    return {
        "pool": POOL,
        "op_tags": {
            LIMIT_TAG[0]: LIMIT_TAG[1],
            "dagster-k8s/config": {"container_config": {"resources": resources}},
            # per step, never at the executor level (an executor-wide num_gpus would override these tags)
            "dagster-ray/config": {"num_cpus": settings.step_cpus, "num_gpus": 1 if gpu else 0},
        },
    }
