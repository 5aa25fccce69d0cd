"""The deployment files: KubeRay manifests against KubeRay's CRDs, cluster.yaml against Ray's autoscaler
schema, the Dockerfile's pins against pyproject.toml, and what ties them together (image, token Secret,
service account, run.yaml). Each check has a planted fault that must make it fail."""

from __future__ import annotations

import copy
import json
import re
import shlex
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from pipelines.spec.config import SweepConfig
from tests.deploy import kube_schema

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (the image's and CI's)

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "kubernetes"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
IMAGE = f"registry.example.com/lee-eval:{VERSION}"
TOKEN_SECRET = (
    "lee-ray-token"  # docs/deploy.md: kubectl create secret generic lee-ray-token --from-literal=auth_token=...
)
CLUSTER_FILES = ["cluster.yaml", "cluster-gcp.yaml"]


def manifests() -> dict[str, dict]:
    """kind/name -> document, over every YAML file of kubernetes/ (what `kubectl apply -f kubernetes/` applies)."""
    docs = {}
    for path in sorted(KUBE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return docs


def _ray_kinds() -> list[str]:
    return [k for k in manifests() if k.split("/")[0] in kube_schema.CRD_FILES]


def cluster_specs(docs: dict[str, dict]) -> dict[str, dict]:
    """The RayCluster spec of each KubeRay manifest (a RayJob's rayClusterSpec, a RayCronJob's job template's)."""
    out = {}
    for key, doc in docs.items():
        kind = doc["kind"]
        if kind == "RayCluster":
            out[key] = doc["spec"]
        elif kind == "RayJob":
            out[key] = doc["spec"]["rayClusterSpec"]
        elif kind == "RayCronJob":
            out[key] = doc["spec"]["jobTemplate"]["rayClusterSpec"]
    return out


def pod_specs(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"]["template"]["spec"], *(g["template"]["spec"] for g in spec["workerGroupSpecs"])]


# ---------------------------------------------------------------------------------------------------------------
# KubeRay CRDs


def test_the_three_kinds_are_shipped():
    kinds = sorted(k.split("/")[0] for k in _ray_kinds())
    assert kinds == ["RayCluster", "RayCronJob", "RayJob"]


@pytest.mark.parametrize("key", _ray_kinds())
def test_manifest_validates_against_kuberays_crd(key):
    assert kube_schema.errors(manifests()[key]) == []


@pytest.mark.parametrize("key", _ray_kinds())
def test_manifest_sets_no_field_whose_cel_rule_goes_unchecked(key):
    doc = manifests()[key]
    assert kube_schema.cel_ruled(doc) == []
    if doc["kind"] == "RayJob":  # the walk finds one when it is there
        ruled = _plant(doc, "spec.deletionStrategy", {"onSuccess": {"policy": "DeleteCluster"}})
        assert kube_schema.cel_ruled(ruled) == ["spec.deletionStrategy"]


def _plant(doc: dict, path: str, value) -> dict:
    doc = copy.deepcopy(doc)
    *parents, leaf = path.split(".")
    node = doc
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    node[leaf] = value
    return doc


@pytest.mark.parametrize(
    "key, path, value, expect",
    [
        # an unknown field where the schema lists its properties (kubectl --validate=strict refuses it)
        ("RayJob/lee-sweep", "spec.rayClusterSpec.headGroupSpec.bogus", 1, "'bogus' was unexpected"),
        ("RayJob/lee-sweep", "spec.entrypointt", "lee eval", "'entrypointt' was unexpected"),
        # deep in the embedded Pod spec: a misspelt container field
        (
            "RayCluster/lee",
            "spec.workerGroupSpecs.0.template.spec.containers.0.imagePullPolcy",
            "Always",
            "'imagePullPolcy' was unexpected",
        ),
        (
            "RayCronJob/lee-reevaluate",
            "spec.jobTemplate.rayClusterSpec.workerGroupSpecs.0.minReplica",
            0,
            "'minReplica' was unexpected",
        ),
        # wrong types and enums
        ("RayCluster/lee", "spec.workerGroupSpecs.0.minReplicas", "0", "is not of type 'integer'"),
        ("RayCluster/lee", "spec.authOptions.mode", "tokens", "is not one of"),
        ("RayCluster/lee", "spec.headGroupSpec.rayStartParams.num-cpus", 0, "is not of type 'string'"),
        ("RayCronJob/lee-reevaluate", "spec.schedule", None, "is not of type 'string'"),
        ("RayCluster/lee", "metadata.labelz", {"a": "b"}, "metadata.labelz: unknown field"),
    ],
)
def test_a_planted_fault_fails_the_validation(key, path, value, expect):
    doc = manifests()[key]
    assert kube_schema.errors(doc) == []
    found = kube_schema.errors(_plant(doc, path, value))
    assert any(expect in e for e in found), found


def test_a_required_field_missing_fails_the_validation():
    doc = copy.deepcopy(manifests()["RayCronJob/lee-reevaluate"])
    del doc["spec"]["jobTemplate"]
    assert any("'jobTemplate' is a required property" in e for e in kube_schema.errors(doc))


def test_strict_leaves_preserve_unknown_fields_objects_open():
    schema = {
        "type": "object",
        "properties": {
            "a": {
                "type": "object",
                "properties": {"x": {"type": "string"}},
                "x-kubernetes-preserve-unknown-fields": True,
            }
        },
    }
    s = kube_schema.strict(schema)
    assert s["additionalProperties"] is False and "additionalProperties" not in s["properties"]["a"]
    jsonschema.validate({"a": {"x": "1", "extra": 2}}, s)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"b": 1}, s)


# ---------------------------------------------------------------------------------------------------------------
# What ties the manifests together


def test_every_ray_pod_uses_the_image_the_service_account_and_token_auth():
    docs = manifests()
    sa = [d for d in docs.values() if d["kind"] == "ServiceAccount"]
    assert len(sa) == 1
    annotations = sa[0]["metadata"]["annotations"]
    assert "eks.amazonaws.com/role-arn" in annotations  # IRSA (GKE's annotation is documented in the file)
    for key, spec in cluster_specs(docs).items():
        assert spec["authOptions"] == {"mode": "token", "secretName": TOKEN_SECRET}, key
        assert Version(spec["rayVersion"]) >= Version("2.52"), key  # authOptions needs Ray >= 2.52
        for pod in pod_specs(spec):
            assert pod["serviceAccountName"] == sa[0]["metadata"]["name"], key
            assert [c["image"] for c in pod["containers"]] == [IMAGE], key


def test_cpu_head_and_a_gpu_worker_group_that_scales_from_zero_dashboard_inside_the_cluster():
    for key, spec in cluster_specs(manifests()).items():
        assert spec["enableInTreeAutoscaling"] is True, key
        head = spec["headGroupSpec"]
        assert head["rayStartParams"]["num-cpus"] == "0", key  # control only
        assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"], key
        assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress"), key
        (gpu,) = spec["workerGroupSpecs"]
        assert gpu["minReplicas"] == 0 and gpu["replicas"] == 0 and gpu["maxReplicas"] >= 1, key
        assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1", key


def test_jobs_run_lee_commands_that_lees_parser_accepts():
    from pipelines.cli import build_parser

    docs = manifests()
    sweep = docs["RayJob/lee-sweep"]["spec"]
    nightly = docs["RayCronJob/lee-reevaluate"]["spec"]["jobTemplate"]
    for spec, command in ((sweep, "eval"), (nightly, "reevaluate")):
        argv = shlex.split(spec["entrypoint"])
        assert argv[:2] == ["lee", command]
        assert build_parser().parse_args(argv[1:]).command == command
        env = yaml.safe_load(spec["runtimeEnvYAML"])
        assert set(env) == {"env_vars"}  # nothing to upload or install: the image has it all
        assert spec["shutdownAfterJobFinishes"] is True


def test_the_nightly_job_reads_run_yaml_from_the_configmap_that_holds_deploy_run_yaml():
    docs = manifests()
    job = docs["RayCronJob/lee-reevaluate"]["spec"]
    assert len(job["schedule"].split()) == 5
    config = shlex.split(job["jobTemplate"]["entrypoint"])[
        shlex.split(job["jobTemplate"]["entrypoint"]).index("--config") + 1
    ]
    head = job["jobTemplate"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    volumes = {v["name"]: v for v in head["volumes"]}
    (mount,) = [m for m in head["containers"][0]["volumeMounts"] if config.startswith(m["mountPath"] + "/")]
    cm_name = volumes[mount["name"]]["configMap"]["name"]
    data = docs[f"ConfigMap/{cm_name}"]["data"]
    key = config.removeprefix(mount["mountPath"] + "/")
    assert data[key] == (REPO / "deploy" / "run.yaml").read_text()
    cfg = SweepConfig.from_dict(yaml.safe_load(data[key]), source=key)
    assert cfg.output.startswith("s3://") and cfg.gpus_per_actor == 1


# ---------------------------------------------------------------------------------------------------------------
# The image


def dockerfile_pins() -> tuple[str, dict[str, str]]:
    """(base image, {package: pinned version}) of docker/Dockerfile."""
    text = (REPO / "docker" / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    pins = dict(re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^"\s]+)"', text))
    return base, pins


def test_dockerfile_pins_torch_ray_and_timm_as_pyproject_allows_and_the_tests_ran_them():
    base, pins = dockerfile_pins()
    assert base == "rayproject/ray:2.60.0-py311-cu128"
    assert set(pins) >= {"ray", "torch", "torchvision", "timm"}
    assert pins["ray"] == base.split(":")[1].split("-")[0]  # the base image's Ray, never another
    deps = {Requirement(r).name: Requirement(r) for r in PYPROJECT["project"]["dependencies"]}
    for name, version in pins.items():
        assert version in deps[name].specifier, f"{name}=={version} is outside pyproject.toml's {deps[name]}"
        installed = Version(metadata.version(name)).base_version
        assert installed == version, f"the tests run {name} {installed}, the image pins {version}"
    py = base.split("-py")[1].split("-")[0]
    assert f"{py[0]}.{py[1:]}" in Requirement(f"x{PYPROJECT['project']['requires-python']}").specifier
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert '".[cloud,pretrained]"' in text and "pip install -e" not in text
    assert f"LEE_GIT_REV=lee-eval=={VERSION}" in text


def test_dockerfile_pin_check_catches_a_pin_outside_pyproject():
    deps = {Requirement(r).name: Requirement(r) for r in PYPROJECT["project"]["dependencies"]}
    assert "1.0.1" not in deps["timm"].specifier  # a pin the check above would refuse


def test_dockerignore_keeps_virtualenvs_and_results_out_of_the_build():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "venv", "*.egg-info", "lee-results", "*.parquet"} <= set(ignored)


# ---------------------------------------------------------------------------------------------------------------
# cluster.yaml (ray up) against the autoscaler's schema


def ray_schema() -> dict:
    import ray

    return json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def _load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_cluster_yaml_validates_against_rays_autoscaler_schema(name):
    jsonschema.validate(_load(name), ray_schema())


@pytest.mark.parametrize(
    "path, value",
    [
        ("dashboard_host", "127.0.0.1"),  # unknown top-level key
        ("available_node_types.gpu_worker.min_worker", 0),  # misspelt node type key
        ("available_node_types.gpu_worker.resources.GPU", "1"),  # wrong type
        ("docker.imagee", "x"),  # unknown docker key
    ],
)
@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_a_planted_fault_fails_the_autoscaler_schema(name, path, value):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_plant(_load(name), path, value), ray_schema())


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_cluster_yaml_image_token_auth_dashboard_and_uploads(name):
    cfg = _load(name)
    assert cfg["docker"]["image"] == IMAGE
    assert "--env RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]  # every process in every node's container
    assert cfg["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"  # the token of `ray get-auth-token`
    assert (REPO / cfg["file_mounts"]["/home/ray/lee/run.yaml"]).is_file()
    commands = [
        c
        for key in ("setup_commands", "head_setup_commands", "worker_setup_commands", "initialization_commands")
        for c in cfg[key]
    ]
    assert not any("pip install" in c for c in commands)  # the image has everything, pinned
    (head_start,) = [c for c in cfg["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start and "--num-cpus=0" in head_start
    assert {".git", ".venv", "venv", "env", "*.egg-info", "**/__pycache__", "lee-results", "*.parquet"} <= set(
        cfg["rsync_exclude"]
    )
    assert cfg["available_node_types"]["gpu_worker"]["min_workers"] == 0


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_the_head_hosts_nightly_cron_line_runs_lee_reevaluate_on_the_mounted_run_yaml(name):
    from pipelines.cli import build_parser

    cfg = _load(name)
    (cmd,) = cfg["available_node_types"]["head"]["initialization_commands"]
    line = shlex.split(cmd)[1]  # echo '<cron.d line>' | sudo tee /etc/cron.d/lee-reevaluate
    assert cmd.endswith("| sudo tee /etc/cron.d/lee-reevaluate")
    fields = line.split(maxsplit=6)
    assert fields[:6] == ["0", "2", "*", "*", "*", "root"]
    argv = shlex.split(fields[6].split(">>")[0])
    assert argv[:4] == ["docker", "exec", cfg["docker"]["container_name"], "lee"]
    args = build_parser().parse_args(argv[4:])
    assert args.config in cfg["file_mounts"] and args.address == "auto"


def test_workers_write_the_bucket_with_a_policy_limited_to_it():
    aws = _load("cluster.yaml")
    types = aws["available_node_types"]
    for name in ("gpu_worker", "cpu_worker"):
        assert types[name]["node_config"]["IamInstanceProfile"]["Arn"].endswith(":instance-profile/lee-results")
    assert types["head"]["node_config"]["IamInstanceProfile"]["Arn"].endswith(":instance-profile/lee-head")
    policy = json.loads((REPO / "deploy" / "aws" / "lee-results-policy.json").read_text())
    resources = {
        r for s in policy["Statement"] for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    }
    assert resources == {"arn:aws:s3:::lee-results", "arn:aws:s3:::lee-results/*"}
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert {"s3:PutObject", "s3:GetObject", "s3:ListBucket", "s3:DeleteObject"} <= actions
    assert not any("*" in a for a in actions)
    bucket = SweepConfig.from_dict(yaml.safe_load((REPO / "deploy" / "run.yaml").read_text())).output
    assert bucket.removeprefix("s3://").split("/")[0] == "lee-results"
    gcp = _load("cluster-gcp.yaml")["available_node_types"]
    assert gcp["gpu_worker"]["node_config"]["serviceAccounts"][0]["email"].startswith("lee-results@")
