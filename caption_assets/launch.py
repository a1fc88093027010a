"""Launch runs through the Dagster instance, as the UI and the daemon do, and wait for them.

The CLI loads the code location from ``workspace.yaml`` in a managed code server (what ``dagster dev``
and ``dagster job launch`` do), creates each run from the remote job and submits it: the instance's
run coordinator starts or queues it, its run launcher starts a run worker, and the job's configured
executor (multiprocess, k8s, ...) runs the steps with its own concurrency limits and pools. Nothing
here executes a step: a run launched from the shell is the same run the UI would have launched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caption_assets.settings import PROJECT_ROOT

if TYPE_CHECKING:
    from dagster import DagsterInstance
    from dagster._core.workspace.context import WorkspaceRequestContext

WORKSPACE = PROJECT_ROOT / "workspace.yaml"
PARTITION_TAG = "dagster/partition"
LAUNCHED_BY = ("caption_assets/launched_by", "cli")
QUEUED_HINT_S = 10.0  # a run still queued after this long with no daemon: nothing will ever dequeue it


@dataclass(frozen=True)
class Request:
    """One run to launch: a job, the shard partition it runs for (None: unpartitioned), a label to print."""

    job: str
    partition: str | None = None
    label: str = ""


@dataclass(frozen=True)
class Outcome:
    request: Request
    run_id: str
    status: str  # the run's final DagsterRunStatus name: SUCCESS, FAILURE, CANCELED
    seconds: float
    reason: str | None = None  # the first step failure's message, when the run failed

    @property
    def ok(self) -> bool:
        return self.status == "SUCCESS"


@contextmanager
def open_workspace(instance: DagsterInstance, workspace: Path = WORKSPACE) -> Iterator[WorkspaceRequestContext]:
    """The code locations of ``workspace.yaml``, each in a code server the context starts and stops."""
    from dagster import __version__
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(workspace)]), version=__version__, code_server_log_level="WARNING") as process:
        context = process.create_request_context()
        errors = [e for e in context.get_code_location_entries().values() if e.load_error is not None]
        if errors:
            raise RuntimeError(f"code location {errors[0].origin.location_name!r} did not load: {errors[0].load_error.message.strip()}")
        yield context


class Launcher:
    """Creates and submits runs of one code location's jobs; waits for them with at most ``max_runs`` in flight."""

    def __init__(self, instance: DagsterInstance, workspace: WorkspaceRequestContext, max_runs: int = 2, run_config: dict[str, Any] | None = None):
        (self.location,) = [workspace.get_code_location(name) for name in workspace.code_location_names]
        (self.repo,) = self.location.get_repositories().values()
        self.instance, self.workspace, self.max_runs = instance, workspace, max(1, max_runs)
        self.run_config = run_config or {}

    def has_job(self, name: str) -> bool:
        return self.repo.has_job(name)

    def submit(self, request: Request, run_config: dict[str, Any] | None = None) -> str:
        """Create the run (the same snapshot, plan and tags the UI records) and hand it to the run coordinator."""
        from dagster._core.definitions.selector import JobSubsetSelector as Selector  # as `dagster job launch` does

        remote = self.location.get_job(Selector(location_name=self.location.name, repository_name=self.repo.name, job_name=request.job, op_selection=None))
        config = {**self.run_config, **(run_config or {})}
        tags = {**remote.tags, LAUNCHED_BY[0]: LAUNCHED_BY[1], **({PARTITION_TAG: request.partition} if request.partition else {})}
        plan = self.location.get_execution_plan(remote, config, step_keys_to_execute=None, known_state=None, instance=self.instance)
        run = self.instance.create_run(
            job_name=remote.name, run_id=None, run_config=config, resolved_op_selection=None, step_keys_to_execute=None,
            op_selection=None, status=None, root_run_id=None, parent_run_id=None, tags=tags, job_snapshot=remote.job_snapshot,
            execution_plan_snapshot=plan.execution_plan_snapshot, parent_job_snapshot=remote.parent_job_snapshot,
            remote_job_origin=remote.get_remote_origin(), job_code_origin=remote.get_python_origin(),
            asset_selection=None, asset_check_selection=None, asset_graph=self.repo.asset_graph,
        )
        self.instance.submit_run(run.run_id, self.workspace)
        return run.run_id

    def run(self, requests: Sequence[Request], on_done=None, run_config: dict[str, Any] | None = None, poll_s: float = 0.2) -> list[Outcome]:
        """Launch ``requests`` with at most ``max_runs`` in flight; return their outcomes in request order."""
        from dagster import DagsterRunStatus

        finished = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
        pending, flight, done = list(enumerate(requests)), {}, {}
        while pending or flight:
            while pending and len(flight) < self.max_runs:
                i, req = pending.pop(0)
                flight[self.submit(req, run_config)] = (i, req, time.perf_counter())
            time.sleep(poll_s)
            for run_id, (i, req, t0) in list(flight.items()):
                run = self.instance.get_run_by_id(run_id)
                if run.status == DagsterRunStatus.QUEUED and time.perf_counter() - t0 > QUEUED_HINT_S and not _daemon_running(self.instance):
                    raise RuntimeError(f"run {run_id[:8]} is queued and no dagster-daemon is running to dequeue it: start `dagster-daemon run` "
                                       "with this DAGSTER_HOME, or use the DefaultRunCoordinator")
                if run.status in finished:
                    del flight[run_id]
                    out = Outcome(req, run_id, run.status.value, time.perf_counter() - t0, None if run.status == DagsterRunStatus.SUCCESS else failure_reason(self.instance, run_id))
                    done[i] = out
                    if on_done is not None:
                        on_done(out)
        return [done[i] for i in range(len(requests))]


def ingest_until_settled(ingest: Callable[[list[str], bool], list[str]], stale: Callable[[], Iterable[str]],
                          shards: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Ingest ``shards``, then re-ingest the shards the duplicate index marks stale until none is.

    Ingests run concurrently and commit in any order; a shard that committed before an earlier-sorting shard holding
    the first copy of one of its images kept that image as an original, and the index marks it stale (what the crawl
    sensor re-ingests under a daemon). ``ingest(names, again)`` launches the runs and returns the shards that
    succeeded. A re-ingest can restale only shards sorting after it, so this ends; a shard whose re-ingest fails is
    not retried here (it stays stale for the sensor). Returns (the shards ingested, each round's re-ingested shards).
    """
    ingested = ingest(list(shards), False)
    known, rounds = set(shards), []
    for _ in range(len(shards)):
        again = sorted(set(stale()) & known)
        if not again:
            break
        rounds.append(again)
        failed = set(again) - set(ingest(again, True))
        known -= failed
        ingested = [s for s in ingested if s not in failed]
    return ingested, rounds


def failure_reason(instance: DagsterInstance, run_id: str) -> str:
    """The first step failure's error (or the run failure's message): what a user reads first in the UI."""
    from dagster import DagsterEventType

    for record in instance.get_records_for_run(run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}).records:
        event = record.event_log_entry.dagster_event
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            return f"{event.step_key or 'run'}: {error.message.strip().splitlines()[0]}"
        if event.message:
            return event.message.strip().splitlines()[0]
    return "the run ended without a step failure (see its logs in the UI)"


def _daemon_running(instance: DagsterInstance) -> bool:
    try:
        return bool(instance.get_daemon_heartbeats())
    except Exception:  # noqa: BLE001 - an instance without daemon storage has no daemon
        return False
