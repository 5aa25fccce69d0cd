"""A real two-node, token-authenticated Ray cluster on the loopback address (the README's recipe).

Two ``ray start --block`` processes on this machine, each its own node (temp dir, ports, one CPU),
under their own process groups and stopped by those groups (never ``ray stop``, which would end every
Ray on the machine). Used by the ``cluster`` fixture (tests/conftest.py, shared by every cluster test) and by
benchmarks/bench_jobs.py. :meth:`LoopbackCluster.kill_worker` ends the worker node's process group with
SIGKILL (a preempted spot instance); :meth:`LoopbackCluster.add_worker` starts a new one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipelines.store.results import Store

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_ports() -> list[str]:
    """Ports of one node's own processes (two nodes on one machine must not share any)."""
    return [
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]


def lee(args, env, timeout=240, cwd=REPO) -> subprocess.CompletedProcess:
    """``python -m pipelines ARGS`` (the ``lee`` command of this checkout) in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def lee_all(calls, timeout=240) -> list[tuple[subprocess.CompletedProcess, float]]:
    """``lee(args, env)`` for each ``(args, env)`` of ``calls``, all at once (independent commands: their
    start-ups overlap); each one's result and seconds, in the order of ``calls``."""

    def timed(call):
        t0 = time.time()
        r = lee(*call, timeout=timeout)
        return r, time.time() - t0

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(timed, calls))


def user_env(token: str | None, home: str) -> dict[str, str]:
    """A user's environment: the token (if any) in RAY_AUTH_TOKEN, RAY_AUTH_MODE unset, no ~/.ray."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    }
    env["HOME"] = home
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    if token is not None:
        env["RAY_AUTH_TOKEN"] = token
    return env


def running_row(out: Path, *, node: str | None = None, not_pid: int | None = None) -> dict | None:
    """The ``Interrupted`` placeholder ``runs`` row of a unit running now under the local root ``out`` (on
    ``node``; not written by process ``not_pid``), if any."""
    if not (out / "runs").exists():
        return None
    try:
        rows = Store(str(out)).runs().to_pylist()
    except Exception:  # noqa: BLE001 - a row file being renamed into place
        return None
    return next(
        (
            r
            for r in rows
            if r["error_type"] == "Interrupted"
            and (node is None or r["node_id"] == node)
            and (not_pid is None or r["pid"] != not_pid)
        ),
        None,
    )


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: children, their children...)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state
    out, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        out += kids
        frontier = kids
    return out


def stop_groups(procs, sigs=((signal.SIGTERM, 3), (signal.SIGKILL, 10))) -> None:
    """End the process group of each of ``procs`` (a node's raylet, GCS, workers), all at once: SIGTERM, then SIGKILL
    what is left after 3 s (a head's ``ray start --block`` may take more than 10 s to end its dashboard after
    SIGTERM), then SIGKILL the stragglers of every group."""
    left = [p for p in procs if p is not None]
    for sig, wait in sigs:
        for proc in left:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        for proc in left:
            try:
                proc.wait(timeout=max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        left = [p for p in left if p.poll() is None]
        if not left:
            break
    for proc in procs:
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group
            except ProcessLookupError:
                pass


def stop_group(proc: subprocess.Popen, sigs=((signal.SIGTERM, 3), (signal.SIGKILL, 10))) -> None:
    """:func:`stop_groups` of one process."""
    stop_groups([proc], sigs)


class LoopbackCluster:
    """Head + one worker node on 127.0.0.1 with token auth.

    Attributes:
        gcs: GCS address (``127.0.0.1:PORT``), for ``lee eval --address``.
        address: job server URL (``http://127.0.0.1:PORT``), for ``lee submit``.
        token: the cluster's token.
        nodes: sorted ids of the alive nodes.

    Unpacks as ``gcs, address, token, nodes`` (the fixture's former tuple).
    """

    def __init__(self, num_cpus: int = 1, *, workers: int = 1, node_env: dict[str, str] | None = None):
        self.token = secrets.token_hex(32)
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, **(node_env or {}))
        self.num_cpus = num_cpus
        self.workers = workers
        self.temps: list[str] = []
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.stopped: list[subprocess.Popen] = []
        self.extra: list[subprocess.Popen] = []
        port, dash = free_port(), free_port()
        self.gcs, self.address = f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}"
        self._port, self._dash = port, dash
        self.nodes: list[str] = []
        self.worker_node: str | None = None
        self.lost: set[str] = set()  # nodes killed here (kill_worker)

    def __iter__(self):
        return iter((self.gcs, self.address, self.token, self.nodes))

    def __getitem__(self, i: int):
        return tuple(self)[i]

    def _common(self) -> list[str]:
        temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Unix socket paths
        self.temps.append(temp)
        return [
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.num_cpus}",
            "--object-store-memory=150000000",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
            *node_ports(),
        ]

    def start(self, timeout: float = 120) -> LoopbackCluster:
        self.head = subprocess.Popen(
            [
                "ray",
                "start",
                "--head",
                *self._common(),
                f"--port={self._port}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self._dash}",
                f"--ray-client-server-port={free_port()}",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.time() + timeout
        if self.workers:  # the worker starts once the GCS listens, while the head starts its dashboard and raylet
            while not self._listening(self._port):
                if self.head.poll() is not None:
                    raise RuntimeError("ray head exited")
                if time.time() > deadline:
                    raise RuntimeError(f"the head's GCS at {self.gcs} did not come up")
                time.sleep(0.1)
            self.add_worker(timeout=timeout, before=set())
        while not self._head_up():  # the job server answers and the head node has registered
            if self.head.poll() is not None:
                raise RuntimeError("ray head exited")
            if time.time() > deadline:
                raise RuntimeError(f"the head at {self.address} did not come up")
            time.sleep(0.2)
        self.nodes = self._answered_nodes(deadline)
        return self

    @staticmethod
    def _listening(port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    def _get(self, path: str):
        """GET ``path`` of the head's dashboard (the job server, Ray's state API) with the token; parsed JSON."""
        req = urllib.request.Request(self.address + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def _head_up(self) -> bool:
        try:
            self._get("/api/jobs/")  # what `lee status` asks
            return any(n["is_head_node"] for n in self._list_nodes())
        except (OSError, ValueError, KeyError):  # not listening yet, or the dashboard's modules still loading
            return False

    def _list_nodes(self) -> list[dict]:
        """Every node the GCS knows (alive or dead), from Ray's state API on the dashboard: milliseconds, where a
        ``ray.init`` in a fresh process takes seconds (and this process has its own local Ray)."""
        return self._get("/api/v0/nodes?limit=10000&detail=false")["data"]["result"]["result"]

    def _query_nodes(self) -> list[str] | None:
        """Sorted ids of the alive nodes, less those killed here that the GCS has not yet found dead; None when the
        cluster did not answer (a busy machine: ask again)."""
        try:
            nodes = self._list_nodes()
        except (OSError, ValueError, KeyError):
            return None
        return sorted(n["node_id"] for n in nodes if n["state"] == "ALIVE" and n["node_id"] not in self.lost)

    def alive_nodes(self) -> list[str]:
        return self._query_nodes() or []

    def _answered_nodes(self, deadline: float) -> list[str]:
        """The alive nodes, asked until the cluster answers (or ``deadline``)."""
        while (nodes := self._query_nodes()) is None:
            if time.time() > deadline:
                raise RuntimeError(f"the cluster at {self.address} did not answer")
            time.sleep(0.2)
        return nodes

    def _new_nodes(self, before: set[str]) -> set[str]:
        """The alive nodes, other than the head, that are not in ``before`` (none while the cluster does not answer)."""
        try:
            nodes = self._list_nodes()
        except (OSError, ValueError, KeyError):
            return set()
        alive = {n["node_id"] for n in nodes if n["state"] == "ALIVE" and not n["is_head_node"]}
        return alive - before - self.lost

    def add_worker(self, timeout: float = 120, before: set[str] | None = None) -> str:
        """Start a worker node and wait until it has joined; returns its node id. ``before``: the nodes already
        there (asked if not given)."""
        deadline = time.time() + timeout
        if before is None:
            before = set(self._answered_nodes(deadline))
        for start in range(3):  # a node started right after another was lost is sometimes refused: start again
            log = Path(tempfile.mkdtemp(prefix="rcl", dir="/tmp")) / "worker.log"
            self.temps.append(str(log.parent))
            with open(log, "wb") as fh:
                self.worker = subprocess.Popen(
                    ["ray", "start", f"--address={self.gcs}", *self._common()],
                    env=self.env,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            while time.time() < deadline and self.worker.poll() is None:
                if new := self._new_nodes(before):
                    self.nodes = self.alive_nodes()
                    self.worker_node = new.pop()
                    return self.worker_node
                time.sleep(0.2)
            if time.time() >= deadline:
                break
            if start == 2:
                raise RuntimeError(f"ray worker node exited: {log.read_text()[-2000:]}")
        raise RuntimeError("the worker node did not join")

    def add_node(self, *args: str, timeout: float = 120) -> tuple[subprocess.Popen, str]:
        """Start one more node with extra ``ray start`` flags (``--num-gpus=1``: a declared GPU worker, as the
        manifests' GPU worker group) and wait until it has joined; (its process, its node id). It is not the
        ``worker``: :meth:`remove_node` ends it."""
        deadline = time.time() + timeout
        before = set(self._answered_nodes(deadline))
        for start in range(3):  # a port picked free may be taken meanwhile by another Ray on this machine
            log = Path(tempfile.mkdtemp(prefix="rcn", dir="/tmp")) / "node.log"
            self.temps.append(str(log.parent))
            with open(log, "wb") as fh:
                proc = subprocess.Popen(
                    ["ray", "start", f"--address={self.gcs}", *self._common(), *args],
                    env=self.env,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.extra.append(proc)
            while time.time() < deadline and proc.poll() is None:
                if new := self._new_nodes(before):
                    return proc, new.pop()
                time.sleep(0.2)
            stop_group(proc)
            if time.time() >= deadline or start == 2:
                raise RuntimeError(f"the extra node did not join: {log.read_text()[-2000:]}")
        raise AssertionError("unreachable")

    def remove_node(self, proc: subprocess.Popen, node: str, timeout: float = 60) -> None:
        """End a node of :meth:`add_node` and wait until the cluster no longer counts it alive: SIGTERM (its raylet
        leaves the cluster), then, once it has left, SIGKILL for what of its group is still ending."""
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + timeout
        while time.time() < deadline:
            nodes = self._query_nodes()
            if nodes is not None and node not in nodes:
                break
            time.sleep(0.2)
        stop_group(proc, sigs=((signal.SIGKILL, 10),))

    def ensure_worker(self) -> None:
        """Start a new worker node if a test killed the last one (:meth:`kill_worker`)."""
        if self.worker is None:
            self.add_worker()

    def kill_worker(self) -> None:
        """SIGKILL every process of the worker node's group at once (a preempted spot instance)."""
        assert self.worker is not None
        stop_group(self.worker, sigs=((signal.SIGKILL, 10),))
        if self.worker_node is not None:
            self.lost.add(self.worker_node)
        self.stopped.append(self.worker)
        self.worker = None

    def processes(self, title: str) -> list[int]:
        """Pids of this cluster's processes whose command line contains ``title`` (``ray::JobSupervisor``)."""
        roots = [p.pid for p in (self.head, self.worker) if p is not None]
        out = []
        for pid in [q for r in roots for q in descendants(r)]:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title in cmd:
                out.append(pid)
        return out

    def stop(self) -> None:
        stop_groups([*self.extra, self.worker, self.head])  # every node at once
        for t in self.temps:
            shutil.rmtree(t, ignore_errors=True)


def start_cluster(num_cpus: int = 1, *, workers: int = 1, node_env: dict[str, str] | None = None) -> LoopbackCluster:
    """Start the head and (``workers=1``) the worker node; ``node_env``: variables of both nodes' processes
    (``RAY_memory_usage_threshold``...)."""
    c = LoopbackCluster(num_cpus, workers=workers, node_env=node_env)
    try:
        return c.start()
    except BaseException:
        c.stop()
        raise
