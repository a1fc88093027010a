"""A local cluster a user can start: PostgreSQL for the Dagster instance, a Ray head and Ray worker nodes.

``caption-assets cluster up`` starts them from this venv on one machine, each Ray node a separate
process group with its own ports and its own name (``CAPTION_ASSETS_RAY_NODE``), so steps that land on
different nodes are told apart. The layout under the cluster folder (default ``data/cluster``):

- ``postgres/``     the database cluster (``initdb``; loopback only, trust auth: a local test cluster), its log
- ``dagster_home/`` ``dagster.yaml``: run, event-log and schedule storage on that Postgres
- ``logs/``         each node's and Postgres' output
- ``cluster.json``  ports, the Ray dashboard address, each node's pid

On real machines the same pieces are ``ray start`` on every host (or KubeRay) and a managed Postgres; the
README's "Scaling out" says what must be shared. Nothing here is imported by the definitions.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from caption_assets.placement import INDEX_RESOURCE
from caption_assets.ray_placement import NODE_ENV


class ClusterError(RuntimeError):
    """The cluster could not be started or reached; the message says which piece and where its log is."""


@dataclass
class ClusterSpec:
    root: Path
    workers: int = 1
    cpus_per_node: int = 1
    postgres_port: int = 15432
    ray_port: int = 26379
    dashboard_port: int = 28265
    worker_ports_from: int = 30000  # node i's Ray workers use ports from + 1000 i .. + 999
    postgres_dir: str = ""  # default: <root>/postgres (as root, somewhere the postgres account can reach if it cannot)
    object_store_mb: int = 256  # per node; small: the steps pass data through the lake, not Ray's object store
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def postgres_url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.postgres_port}/dagster"  # psycopg2: what dagster-postgres installs

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def save(self) -> None:
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        (self.root / "cluster.json").write_text(json.dumps(d, indent=2))

    @classmethod
    def load(cls, root: Path) -> "ClusterSpec":
        f = root / "cluster.json"
        if not f.exists():
            raise ClusterError(f"no cluster at {root} (caption-assets cluster up)")
        d = json.loads(f.read_text())
        d["root"] = Path(d["root"])
        return cls(**d)


def instance_yaml(spec: ClusterSpec) -> str:
    """The instance every process of the cluster shares: storage on Postgres; the ``gpu`` pool as wide as the cluster
    (Ray itself holds a step until a node has the CPUs and GPUs it asked for)."""
    return f"""# written by caption-assets cluster up
telemetry:
  enabled: false
storage:
  postgres:
    postgres_url: "{spec.postgres_url}"
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
concurrency:
  pools:
    default_limit: {spec.workers + 1}
"""


# --- PostgreSQL -----------------------------------------------------------------------------------------------

def postgres_bin(name: str) -> str:
    """Debian keeps the server binaries out of PATH (/usr/lib/postgresql/<version>/bin)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise ClusterError(f"PostgreSQL's {name} is not installed (apt install postgresql)")
    return found


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """The server refuses to run as root: run it as the ``postgres`` account the Debian package creates."""
    if os.geteuid() != 0:
        return cmd
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterError("running as root and there is no 'postgres' user to run the database server as") from None
    return ["runuser", "-u", "postgres", "--", *cmd]


def _postgres_home(spec: ClusterSpec) -> Path:
    """Where the server's files live. As root the server runs as ``postgres``, which may not be able to enter the cluster
    folder (a private temp dir): then under /var/tmp, named after the folder."""
    if spec.postgres_dir:
        return Path(spec.postgres_dir)
    home = spec.root / "postgres"
    if os.geteuid() == 0 and subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(spec.root)]).returncode != 0:
        home = Path("/var/tmp/caption-assets-postgres") / hashlib.sha1(str(spec.root).encode()).hexdigest()[:12]
    spec.postgres_dir = str(home)
    return home


def postgres_up(spec: ClusterSpec) -> None:
    home = _postgres_home(spec)
    data, sock, log = home / "data", home / "socket", home / "postgres.log"
    fresh = not (data / "PG_VERSION").exists()
    for d in (data, sock):
        d.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        log.touch()
        for p in (home, data, sock, log):
            shutil.chown(p, "postgres", "postgres")
        os.chmod(data, 0o700)
    if fresh:
        _run(_as_postgres_user([postgres_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]), "initdb", log)
    if not postgres_ready(spec):
        opts = f"-p {spec.postgres_port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=200"
        _run(_as_postgres_user([postgres_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start"]), "pg_ctl start", log)
    exists = subprocess.run([postgres_bin("psql"), "-h", "127.0.0.1", "-p", str(spec.postgres_port), "-U", "postgres", "-tAc",
                             "SELECT 1 FROM pg_database WHERE datname = 'dagster'"], capture_output=True, text=True)
    if exists.stdout.strip() != "1":
        _run([postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(spec.postgres_port), "-U", "postgres", "dagster"], "createdb", log)


def postgres_ready(spec: ClusterSpec) -> bool:
    return subprocess.run([postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(spec.postgres_port)], capture_output=True).returncode == 0


def postgres_down(spec: ClusterSpec) -> None:
    data = _postgres_home(spec) / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run(_as_postgres_user([postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True)


def _run(cmd: list[str], what: str, log: Path) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ClusterError(f"{what} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-400:]} (log: {log})")


# --- Ray ------------------------------------------------------------------------------------------------------

def _ray() -> str:
    exe = Path(sys.executable).parent / "ray"
    if not exe.exists():
        raise ClusterError(f"ray is not installed for {sys.executable} (pip install 'ray[default]' dagster-ray)")
    return str(exe)


def node_command(spec: ClusterSpec, index: int) -> list[str]:
    """``ray start --block`` for node ``index`` (0: the head). Each node has its own ports so several share a machine."""
    common = ["--block", "--num-cpus", str(spec.cpus_per_node), "--object-store-memory", str(spec.object_store_mb * 2**20),
              "--disable-usage-stats", "--min-worker-port", str(spec.worker_ports_from + 1000 * index), "--max-worker-port", str(spec.worker_ports_from + 999 + 1000 * index),
              "--dashboard-agent-listen-port", str(spec.dashboard_port + 100 + index)]
    if index == 0:
        return [_ray(), "start", "--head", "--port", str(spec.ray_port), "--dashboard-port", str(spec.dashboard_port),
                "--dashboard-host", "127.0.0.1", "--include-dashboard", "true", "--ray-client-server-port", str(spec.ray_port + 1),
                "--resources", json.dumps({INDEX_RESOURCE: 1}), *common]
    return [_ray(), "start", "--address", f"127.0.0.1:{spec.ray_port}", *common]


def node_name(index: int) -> str:
    return "head" if index == 0 else f"worker-{index}"


def start_node(spec: ClusterSpec, index: int) -> int:
    spec.logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, NODE_ENV: node_name(index), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = open(spec.logs / f"ray-{node_name(index)}.log", "ab")  # noqa: SIM115 - handed to the node process
    proc = subprocess.Popen(node_command(spec, index), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    spec.pids[node_name(index)] = proc.pid
    return proc.pid


def alive_nodes(spec: ClusterSpec) -> list[dict]:
    """The Ray state API's live nodes (empty when the dashboard does not answer)."""
    try:
        with urllib.request.urlopen(f"{spec.dashboard}/api/v0/nodes?limit=1000", timeout=5) as r:
            nodes = json.load(r)["data"]["result"]["result"]
    except (OSError, ValueError, KeyError):
        return []
    return [n for n in nodes if n.get("state") == "ALIVE"]


def wait_for_nodes(spec: ClusterSpec, n: int, timeout_s: float = 120.0) -> None:
    t0 = time.monotonic()
    while len(alive_nodes(spec)) < n:
        if time.monotonic() - t0 > timeout_s:
            raise ClusterError(f"{len(alive_nodes(spec))} of {n} Ray nodes came up in {timeout_s:.0f}s (logs: {spec.logs})")
        time.sleep(0.5)


def kill_node(spec: ClusterSpec, name: str, sig: int = signal.SIGKILL) -> None:
    """Stop one node as a machine would stop: its process group (raylet, workers) and every process it started,
    the steps' Ray job entrypoints included (Ray starts those in a session of their own)."""
    pid = spec.pids.get(name)
    if not pid:
        return
    family = _descendants(pid)
    for p in [pid, *family]:
        try:
            os.killpg(p, sig) if p == pid else os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: parent links), deepest last."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


# --- the whole cluster ----------------------------------------------------------------------------------------

def up(spec: ClusterSpec) -> ClusterSpec:
    """Postgres, the instance's dagster.yaml, the Ray head, then the workers; returns when every node is alive."""
    spec.root = spec.root.resolve()
    spec.root.mkdir(parents=True, exist_ok=True)
    postgres_up(spec)
    spec.home.mkdir(parents=True, exist_ok=True)
    (spec.home / "dagster.yaml").write_text(instance_yaml(spec))
    if not alive_nodes(spec):
        start_node(spec, 0)
        wait_for_nodes(spec, 1)
    for i in range(1, spec.workers + 1):
        if node_name(i) not in spec.pids or not _pid_alive(spec.pids[node_name(i)]):
            start_node(spec, i)
    wait_for_nodes(spec, spec.workers + 1)
    spec.save()
    return spec


def down(spec: ClusterSpec, purge: bool = False) -> None:
    """Stop the nodes and Postgres; ``purge`` also deletes the database files (a throwaway cluster: tests, benches)."""
    for name in sorted(spec.pids, key=lambda n: n == "head"):  # workers first, the head last
        kill_node(spec, name, signal.SIGTERM)
    t0 = time.monotonic()
    while any(_pid_alive(p) for p in spec.pids.values()) and time.monotonic() - t0 < 15:
        time.sleep(0.3)
    for name in spec.pids:
        kill_node(spec, name, signal.SIGKILL)
    spec.pids.clear()
    postgres_down(spec)
    if purge:
        shutil.rmtree(_postgres_home(spec), ignore_errors=True)
    spec.save()


def status(spec: ClusterSpec) -> dict:
    return {"postgres": spec.postgres_url if postgres_ready(spec) else "down", "ray": spec.dashboard,
            "nodes": {n["node_id"][:12]: ("head" if n.get("is_head_node") else "worker") for n in alive_nodes(spec)}}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
