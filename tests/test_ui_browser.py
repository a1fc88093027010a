"""The Dagster UI in a real Chromium: the asset graph, a materialization launched through GraphQL, its metadata.

Skipped (with the reason) when Debian's Chromium is not installed; `.ci/run` installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from caption_assets.cli import INSTANCE_YAML
from caption_assets.settings import PROJECT_ROOT
from tests.helpers import noise_image, write_tar

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHAIN = ["raw_pairs", "alignment_reward_model", "scored_pairs", "recaptioned_pairs", "vision_expert_tags", "fused_captions", "compressed_dataset", "curation_eval"]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium); the real-browser UI test needs it"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(base: str, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.loads(resp.read())
    assert "errors" not in body, body
    return body["data"]


def wait_for(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(1)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def dagster_dev(tmp_path: Path):
    crawl, home = tmp_path / "crawl", tmp_path / "dagster_home"
    crawl.mkdir()
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    members = []
    for i in range(6):
        members += [(f"{i:03d}.jpg", noise_image(seed=i + 1)), (f"{i:03d}.txt", f"a smooth colourful texture number {i}".encode())]
    write_tar(crawl / "ui-shard.tar", members + [("bad.jpg", b""), ("bad.txt", b"zero bytes")])
    port = free_port()
    env = {
        **os.environ, "DAGSTER_HOME": str(home), "CAPTION_ASSETS_CRAWL_DIR": str(crawl), "CAPTION_ASSETS_DATA_DIR": str(tmp_path / "data"),
        "CAPTION_ASSETS_PROFILE": "demo", "CAPTION_ASSETS_AUTOMATION": "off", "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    log = open(tmp_path / "dagster-dev.log", "w")
    started = time.monotonic()
    # dagster dev spawns a webserver, a daemon and code servers and ignores a lone SIGTERM for a while:
    # own process group, so the whole group can be stopped.
    # Started as the demo prints it: the venv's console script from a shell whose PATH lacks the venv.
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if Path(p).resolve() != Path(sys.executable).parent.resolve())
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "caption-assets"), "ui", "--port", str(port)],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: urllib.request.urlopen(f"{base}/server_info", timeout=5).status == 200, 240, "dagster dev to serve")
        yield base, started, tmp_path
    finally:
        stop_group(proc)
        log.close()
        assert not group_members(proc.pid), f"processes outlived the test: {group_members(proc.pid)}"


def group_members(pgid: int) -> list[str]:
    """Live processes of the group (zombies already dead, only waiting to be reaped by init, do not count)."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat="], capture_output=True, text=True).stdout
    return [pid for pid, group, stat in (line.split()[:3] for line in out.splitlines() if len(line.split()) >= 3) if group == str(pgid) and not stat.startswith("Z")]


def stop_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the whole process group, give it ``grace`` seconds, then SIGKILL what is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and group_members(proc.pid):
        time.sleep(0.5)
    if group_members(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 15  # a loaded machine can take a while to tear five processes down
        while time.monotonic() < deadline and group_members(proc.pid):
            time.sleep(0.5)
    proc.wait(timeout=10)


LAUNCH = """
mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on RunConfigValidationInvalid { errors { message } } } }
"""
ADD_PARTITION = """
mutation($repo: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: $name, partitionKey: $key) { __typename } }
"""
STATUS = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def test_asset_graph_and_a_materialization_in_a_real_browser(dagster_dev):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    base, started, tmp = dagster_dev
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        width = 3400
        page = browser.new_page(viewport={"width": width, "height": 1300})
        page.goto(f"{base}/asset-groups", timeout=120_000)
        expand = page.locator('[aria-label="unfold_more"]')  # the collapsed group boxes of the lineage graph
        expand.first.wait_for(timeout=120_000)
        rendered = time.monotonic() - started
        try:  # a first-visit newsletter dialog covers the graph on a fresh DAGSTER_HOME
            page.get_by_role("button", name="Skip").click(timeout=15_000)
        except PlaywrightTimeout:
            pass
        while expand.count():
            expand.first.click()
            page.wait_for_timeout(300)
        page.get_by_role("button", name="Hide navigation").click()
        for _ in range(8):  # the graph only draws what is in view: pan until the whole chain is
            nodes = [page.get_by_text(n, exact=True) for n in CHAIN]
            boxes = [node.first.bounding_box() if node.count() else None for node in nodes]
            xs = [b["x"] for b in boxes if b]
            if len(xs) == len(CHAIN) and min(xs) > 300 and max(xs) < width - 250:
                break
            page.mouse.move(width // 2, 600)
            page.mouse.wheel(-300 if len(xs) < len(CHAIN) or min(xs) <= 300 else 300, 0)
            page.wait_for_timeout(500)
        for name in CHAIN:
            page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=10_000)
        page.screenshot(path=str(tmp / "asset-graph.png"), full_page=True)
        print(f"\ndagster dev start -> asset graph rendered: {rendered:.1f}s; screenshot {tmp / 'asset-graph.png'}")

        repo = {"repositoryLocationName": "caption_assets", "repositoryName": "__repository__"}
        graphql(base, ADD_PARTITION, {"repo": repo, "name": "shards", "key": "ui-shard.tar"})
        launched = graphql(base, LAUNCH, {"params": {
            "selector": {**repo, "jobName": "ingest_shard"}, "runConfigData": {},
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "ui-shard.tar"}]},
        }})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        status = wait_for(lambda: (s := graphql(base, STATUS, {"id": run_id})["runOrError"]["status"]) in ("SUCCESS", "FAILURE", "CANCELED") and s, 300, "the run to finish")
        assert status == "SUCCESS", (tmp / "dagster-dev.log").read_text()[-3000:]

        page.goto(f"{base}/assets/raw_pairs?view=partitions&partition=ui-shard.tar", timeout=60_000)
        page.get_by_text("samples_seen").first.wait_for(state="visible", timeout=60_000)
        page.get_by_text("quarantine_by_reason").first.wait_for(state="visible", timeout=60_000)
        page.screenshot(path=str(tmp / "raw-pairs-partition.png"), full_page=True)
        browser.close()


def test_ui_command_fails_with_one_line_when_it_cannot_start(tmp_path: Path):
    script = Path(sys.executable).parent / "caption-assets"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPTION_ASSETS_", "DAGSTER_HOME"))}
    env["PATH"] = "/usr/bin:/bin"  # as a new user would run the printed line: the venv not activated
    missing = subprocess.run([str(script), "ui"], env={**env, "DAGSTER_HOME": str(tmp_path / "nowhere")}, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "DAGSTER_HOME" in missing.stderr and "does not exist" in missing.stderr
    home = tmp_path / "home"
    home.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run([str(script), "ui", "--port", str(port)], env={**env, "DAGSTER_HOME": str(home), "CAPTION_ASSETS_DATA_DIR": str(tmp_path / "data")},
                              capture_output=True, text=True, timeout=120)
    assert busy.returncode == 2 and busy.stderr.count("\n") == 1 and f"port {port}" in busy.stderr and "Traceback" not in busy.stderr
