"""Each KubeRay manifest's entrypoint and runtime env, run as a Ray job on the loopback cluster.

What KubeRay's submitter does, done here: the token in RAY_AUTH_TOKEN with RAY_AUTH_MODE=token (what
``authOptions`` injects), the manifest's ``entrypoint`` and ``runtimeEnvYAML`` sent to the job server
with Ray's public JobSubmissionClient. The cluster is the session's two-node loopback cluster
(tests/conftest.py, tests/pipelines/loopback.py) with a third node added for this test that declares one
GPU as the manifests' GPU worker group does, so ``--gpus 1`` is kept (no GPU is here: the actor runs on
the CPU, as UnitRunner does without CUDA). Unlike the manifests' head (``num-cpus: "0"``) this head has
one CPU, for Ray Data's decoding tasks, which the GPU workers run on Kubernetes.

Substituted, and only this: ``lee`` -> ``python -m pipelines`` (this checkout's code, not the installed
console script's), the results root (``-o``, a local folder for the bucket), ``--config`` (a copy of
the ConfigMap's run.yaml for its mount path), the models (a tiny test model for ``paper``), and
``--limit 2 --img-size 32 -g translate_x`` appended (flags override run.yaml).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
import yaml

from pipelines.store.results import Store
from tests.deploy.test_manifests import manifests

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.cluster]

SMALL = ["--limit", "2", "--img-size", "32", "-g", "translate_x"]
MODEL = "test_resnet.r160_in1k"
NEW_MODEL = "test_vit.r160_in1k"

SUBMIT = """
import json, sys, time
from ray.job_submission import JobStatus, JobSubmissionClient
address, entrypoint, runtime_env, timeout = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
client = JobSubmissionClient(address)
job = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
deadline = time.time() + timeout
while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
    if time.time() > deadline:
        client.stop_job(job)
        break
    time.sleep(0.5)
print("JOB", json.dumps({"status": str(client.get_job_status(job)), "logs": client.get_job_logs(job),
                  "env": client.get_job_info(job).runtime_env}))
"""


@pytest.fixture
def gpu_cluster(cluster):
    """The session's loopback cluster (tests/conftest.py: a head and a worker, one CPU each, token auth) with a
    third node that declares one GPU, as the manifests' GPU worker group, for this test. Yields (job server URL,
    token, {node id: 'head' | 'cpu' | 'gpu'})."""
    proc, gpu = cluster.add_node("--num-gpus=1")
    try:
        nodes = {node: "cpu" if node == cluster.worker_node else "head" for node in cluster.nodes}
        nodes[gpu] = "gpu"
        assert sorted(nodes.values()) == ["cpu", "gpu", "head"], nodes
        yield cluster.address, cluster.token, nodes
    finally:
        cluster.remove_node(proc, gpu)  # the other cluster tests count on two nodes and no GPU


def local_entrypoint(entrypoint: str, replace: dict[str, str], append: list[str]) -> str:
    """The manifest's entrypoint with ``lee`` run from this checkout, the values of ``replace``'s flags (which
    the entrypoint must have) replaced, and ``append`` added."""
    argv = shlex.split(entrypoint)
    assert argv[0] == "lee"
    for flag, value in replace.items():
        argv[argv.index(flag) + 1] = value
    return shlex.join([sys.executable, "-m", "pipelines", *argv[1:], *append])


def submit(address: str, token: str, entrypoint: str, runtime_env_yaml: str, timeout: float = 240) -> dict:
    """Submit as KubeRay's submitter does (token from the Secret, auth mode token); wait; status, logs, env."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    runtime_env = yaml.safe_load(runtime_env_yaml)
    r = subprocess.run(
        [sys.executable, "-c", SUBMIT, address, entrypoint, json.dumps(runtime_env), str(timeout)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout + 60,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (line,) = [line for line in r.stdout.splitlines() if line.startswith("JOB ")]
    return json.loads(line.removeprefix("JOB "))


def test_sweep_rayjob_then_nightly_raycronjob_on_a_two_node_cluster(gpu_cluster, tmp_path):
    address, token, nodes = gpu_cluster
    docs = manifests()
    out = tmp_path / "lee-results"

    # The RayJob's sweep: `lee eval -m paper -d sample-test --gpus 1 -r s3://...`, its runtime env as is.
    sweep = docs["RayJob/lee-sweep"]["spec"]
    entry = local_entrypoint(sweep["entrypoint"], {"-m": MODEL, "-r": str(out)}, SMALL)
    assert "--gpus 1" in entry and "-d sample-test" in entry  # kept from the manifest
    job = submit(address, token, entry, sweep["runtimeEnvYAML"])
    assert job["status"] == "SUCCEEDED", job["logs"][-3000:]
    assert job["env"]["env_vars"] == yaml.safe_load(sweep["runtimeEnvYAML"])["env_vars"]
    assert "1 computed" in job["logs"], job["logs"][-3000:]
    runs = Store(str(out)).runs().to_pylist()
    assert [(r["model"], r["status"]) for r in runs] == [(MODEL, "done")]
    assert nodes[runs[0]["node_id"]] == "gpu"  # `--gpus 1`: the actor went to the (declared) GPU worker

    # The RayCronJob's re-evaluation on the same results: run.yaml from the ConfigMap, a model added.
    nightly = docs["RayCronJob/lee-reevaluate"]["spec"]["jobTemplate"]
    config = tmp_path / "run.yaml"
    config.write_text(docs["ConfigMap/lee-run"]["data"]["run.yaml"])
    entry = local_entrypoint(
        nightly["entrypoint"], {"--config": str(config)}, ["-m", f"{MODEL},{NEW_MODEL}", *SMALL, "-r", str(out)]
    )
    job = submit(address, token, entry, nightly["runtimeEnvYAML"])
    logs = job["logs"]
    assert job["status"] == "SUCCEEDED", logs[-3000:]
    assert "catalog regenerated from timm" in logs, logs[-3000:]
    assert "1 of 2 units to evaluate" in logs and "new model" in logs, logs[-3000:]  # only the new model ran
    runs = Store(str(out)).runs().to_pylist()
    assert sorted((r["model"], r["status"]) for r in runs) == [(MODEL, "done"), (NEW_MODEL, "done")]
    assert all(nodes[r["node_id"]] == "gpu" for r in runs)
    assert all(r["git_rev"] for r in runs)
