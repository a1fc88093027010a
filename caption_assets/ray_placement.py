"""Where a step ran on a Ray cluster, recorded on its run.

dagster-ray's ``ray_executor`` submits each step as a Ray job; the job's entrypoint process inherits the
environment of the node that runs it. ``caption-assets cluster up`` names each node in
``CAPTION_ASSETS_RAY_NODE`` (a node started by hand falls back to its host name), and a hook in every step
writes ``caption_assets/ray/<step key>`` = ``<node> <ray job id>`` onto the run: the run's tags in the UI,
and what ``caption-assets run`` prints after a run, say which node ran each step.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping

from dagster import HookContext, failure_hook, success_hook

NODE_ENV = "CAPTION_ASSETS_RAY_NODE"
TAG_PREFIX = "caption_assets/ray/"
_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray in a submitted job's entrypoint


def placement_from_env(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(node name, Ray job submission id) when this process is a Ray job's entrypoint, else None."""
    raw = env.get(_JOB_ENV)
    if not raw:
        return None
    try:
        job = json.loads(raw).get("metadata", {}).get("job_submission_id") or ""
    except (ValueError, AttributeError):
        job = ""
    return env.get(NODE_ENV) or socket.gethostname(), job


def placement_tags(step_key: str, env: Mapping[str, str]) -> dict[str, str]:
    where = placement_from_env(env)
    return {} if where is None else {f"{TAG_PREFIX}{step_key}": f"{where[0]} {where[1]}".strip()}


def steps_by_node(tags: Mapping[str, str]) -> dict[str, list[str]]:
    """node -> step keys, from a run's tags."""
    out: dict[str, list[str]] = {}
    for key, value in sorted(tags.items()):
        if key.startswith(TAG_PREFIX):
            out.setdefault(value.split(" ")[0], []).append(key.removeprefix(TAG_PREFIX))
    return out


def _record(context: HookContext, settle_s: float = 0.25, attempts: int = 4) -> None:
    """Tag the run, then check the tag stayed. ``add_run_tags`` rewrites the run's body as read a moment before,
    so two steps of one run finishing together can each drop the other's tag (seen on Postgres in CI): the writer
    whose tag went missing puts it back."""
    tags = placement_tags(context.step_key, os.environ)
    for _ in range(attempts if tags else 0):
        context.instance.add_run_tags(context.run_id, tags)
        time.sleep(settle_s)
        run = context.instance.get_run_by_id(context.run_id)
        if run is None or all(run.tags.get(k) == v for k, v in tags.items()):
            return


@success_hook(name="record_ray_node_on_success")
def record_ray_node_on_success(context: HookContext) -> None:
    _record(context)


@failure_hook(name="record_ray_node_on_failure")
def record_ray_node_on_failure(context: HookContext) -> None:
    _record(context)


RAY_HOOKS = {record_ray_node_on_success, record_ray_node_on_failure}
