"""Session-wide test settings: seeded RNG, float64 by default for the numerics, a loopback S3 API."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Object stores: no test reaches a real bucket. Every s3:// URI of the session goes to moto's S3 server on the
# loopback address (the `s3_endpoint` fixture starts it on this port), with dummy credentials. Set before any
# Ray starts, so that Ray's workers (actors writing s3:// roots) see it too; a short lease time (S3 unit leases,
# pipelines/store/objectstore.py) lets a rerun take over a killed run's leases quickly.
S3_ENDPOINT = f"http://127.0.0.1:{_free_port()}"
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(_var, None)
os.environ.update(
    AWS_ENDPOINT_URL=S3_ENDPOINT,
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
    LEE_LEASE_TTL_S="10",
)

os.environ.setdefault("LEE_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".cache", "lee-tests"))
# No test reaches the real Hugging Face hub: `--weights auto` sees the hub offline (cached weights or random
# init), and the hub tests serve their own checkpoints on the loopback address (tests/hub_server.py).
os.environ["HF_HUB_OFFLINE"] = "1"
# One thread per test process: the suite runs in two pytest-xdist workers on two cores (README's test command), and
# torch's tiny test tensors gain nothing from a second thread (a 16-channel 32 px convolution loop: 4.4 s with one
# thread, 6.9 s with two, 9.7 s with two beside another busy process). Tests that need two threads set them.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request) -> torch.dtype:
    return request.param


def tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance of a derivative computed in ``dtype``."""
    return 1e-9 if dtype == torch.float64 else 2e-3


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server (a real S3 API over HTTP) on the loopback port of ``AWS_ENDPOINT_URL``; its URL."""
    port = S3_ENDPOINT.rsplit(":", 1)[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(S3_ENDPOINT, timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"moto's S3 server did not start on {S3_ENDPOINT}") from None
            time.sleep(0.1)
    yield S3_ENDPOINT
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray per test session (2 CPUs), shared by every test that runs a sweep in this process; its GCS
    address."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            object_store_memory=200 * 1024**2,
        )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


# ------------------------------------------------------------------ the two-node loopback cluster, once per session
@pytest.fixture(scope="session")
def _loopback_cluster():
    from tests.pipelines.loopback import start_cluster

    try:
        # The GCS finds a killed node dead after 3 failed health checks 1 s apart (Ray's defaults: 5, 3 s apart, so
        # 15 s of the node-loss test spent waiting); a live node still has 10 s to answer each check.
        c = start_cluster(node_env={"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"})
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster(_loopback_cluster):
    """A two-node, token-authenticated Ray cluster on 127.0.0.1, started once per test session and shared by
    every cluster test (tests/pipelines/test_cluster.py, tests/deploy/test_entrypoints.py):
    :class:`tests.pipelines.loopback.LoopbackCluster` (``gcs``, ``address``, ``token``, ``nodes``; unpacks as
    ``gcs, address, token, nodes``). If a test killed the worker node, a new one is started before the next."""
    _loopback_cluster.ensure_worker()
    return _loopback_cluster


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for the two pytest-xdist workers (README's ``-n 2 --dist loadgroup``); each group runs in one worker,
    whichever is free when it comes up, so that each session-wide service starts once and each module's fixtures
    are built once:

    - ``local-ray``: the modules that use the session's local Ray (``ray_session``);
    - ``cluster``: the modules that use the loopback two-node cluster; they run last in their worker, one after
      another, so that its nodes are started once and do not idle beside the other tests;
    - every other module is a group of its own.
    """
    items.sort(key=lambda item: "cluster" in getattr(item, "fixturenames", ()))
    used: dict[str, set[str]] = {}
    for item in items:
        used.setdefault(item.nodeid.split("::")[0], set()).update(getattr(item, "fixturenames", ()))
    for item in items:
        module = item.nodeid.split("::")[0]
        group = "cluster" if "cluster" in used[module] else "local-ray" if "ray_session" in used[module] else module
        item.add_marker(pytest.mark.xdist_group(group))
