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
STEP_CPUS, STEP_MEMORY = 4, "16Gi"


def uses_gpu(settings: Settings) -> bool:
    """A GPU is asked for unless every model is pinned to the CPU: ``auto`` means CUDA wherever the step lands."""
    devices = [settings.clip.get("device", "auto"), settings.captioner.get("device", "auto")]
    if settings.fuser.get("backend") == "transformers":  # a local LLM; rules and an endpoint need no device
        devices.append(settings.fuser.get("device", "auto"))
    return any(str(d) != "cpu" for d in devices)


def model_step(settings: Settings) -> dict[str, Any]:
    """``@asset`` keyword arguments (``pool``, ``op_tags``) for a step that loads CLIP, the captioner or the fuser."""
    gpu = uses_gpu(settings)
    resources: dict[str, Any] = {"requests": {"cpu": str(STEP_CPUS), "memory": STEP_MEMORY}}
    if gpu:
        resources["limits"] = {"nvidia.com/gpu": "1"}
    return {
        "pool": POOL,
        "op_tags": {
            LIMIT_TAG[0]: LIMIT_TAG[1],
            "dagster-k8s/config": {"container_config": {"resources": resources}},
            "dagster-ray/config": {"num_cpus": STEP_CPUS, "num_gpus": 1 if gpu else 0},
        },
    }
