"""docs/deploy.md: every command of the page is run or validated here; a command this test does not know fails it."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines.spec.config import SweepConfig
from tests.deploy.test_manifests import CLUSTER_FILES, IMAGE, TOKEN_SECRET, manifests

REPO = Path(__file__).resolve().parents[2]
PAGE = (REPO / "docs" / "deploy.md").read_text()


def commands() -> list[str]:
    """The page's bash commands, one per line; a heredoc (``cat > F <<'EOF' ... EOF``) is one command."""
    out: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", PAGE, flags=re.S):
        lines = iter(block.splitlines())
        for line in lines:
            if not line.strip():
                continue
            if "<<'EOF'" in line:
                body = []
                for more in lines:
                    if more == "EOF":
                        break
                    body.append(more)
                line = line + "\n" + "\n".join(body) + "\n"
            out.append(line)
    return out


def _lee_args(argv: list[str]):
    from pipelines.cli import build_parser

    return build_parser().parse_args(argv)


def _arns() -> set[str]:
    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    return {t["node_config"]["IamInstanceProfile"]["Arn"] for t in cfg["available_node_types"].values()}


def check(command: str, tmp: Path) -> str:
    """Validate one command of the page; return what was checked (for the failure message of the others)."""
    if command.startswith("cat > ") and "<<'EOF'" in command:
        target = shlex.split(command.splitlines()[0])[2]
        data = yaml.safe_load(command.split("\n", 1)[1])
        SweepConfig.from_dict(data, source=target)  # every key known, every value of its type
        assert target.startswith("/"), target
        return "run.yaml"
    argv = shlex.split(command, comments=True)
    head = argv[0]
    if re.fullmatch(r"(\S+ ){5}\S+.*", command) and command.split()[0].isdigit():  # a crontab line
        fields = command.split(maxsplit=5)
        cmd = shlex.split(fields[5].split(">>")[0])
        log = fields[5].split(">>")[1].split()[0]
        assert cmd[0].startswith("/") and cmd[0].endswith("/bin/lee"), "cron has no virtualenv: an absolute path"
        args = _lee_args(cmd[1:])
        assert args.command == "reevaluate" and args.config.startswith("/") and log.startswith("/")
        assert f"cat > {args.config} <<'EOF'" in PAGE  # the run.yaml the page writes
        return "crontab"
    if head == "lee" or head.endswith("/bin/lee"):
        args = _lee_args(argv[1:])
        if args.command == "submit":
            assert args.address == "http://127.0.0.1:8265"
        return "lee"
    if head == "docker":
        assert IMAGE in argv
        if argv[1] == "build":
            assert argv[argv.index("-f") + 1] == "docker/Dockerfile" and argv[-1] == "."
        return "docker"
    if head == "grep" and "xargs" in argv:
        for path in argv[3 : argv.index("|") if "|" in argv else None]:
            assert (REPO / path).exists(), path
        assert IMAGE.split(":")[0] in command
        return "image rename"
    if head == "helm":
        crd = (REPO / "tests" / "data" / "kuberay" / "README.md").read_text()
        if argv[1] == "install":
            assert "--version" in argv and f"v{argv[argv.index('--version') + 1]}" in crd
        return "helm"
    if head == "kubectl":
        docs = manifests()
        if argv[1] == "apply":
            files = [argv[i + 1] for i, a in enumerate(argv) if a == "-f"]
            for f in files:
                assert (REPO / f).is_file(), f
            return "kubectl apply"
        if argv[1:4] == ["create", "secret", "generic"]:
            assert argv[4] == TOKEN_SECRET and argv[5].startswith("--from-literal=auth_token=")
            return "secret"
        if argv[1] == "port-forward":
            (name,) = [k.split("/")[1] for k in docs if k.startswith("RayCluster/")]
            assert argv[2] == f"service/{name}-head-svc" and argv[3] == "8265:8265"  # KubeRay's head service
            return "port-forward"
        if argv[1] == "get":
            kind = {"raycronjob": "RayCronJob", "rayjobs": "RayJob"}[argv[2]]
            assert any(k.startswith(kind + "/") for k in docs)
            if len(argv) > 3:
                assert f"{kind}/{argv[3]}" in docs
            return "kubectl get"
        if argv[1] == "logs":
            assert f"RayJob/{argv[-1].removeprefix('job/')}" in docs
            return "kubectl logs"
        if argv[1] == "annotate":
            assert argv[2:4] == ["serviceaccount", "lee-results"] and "ServiceAccount/lee-results" in docs
            assert "iam.gke.io/gcp-service-account" in (REPO / "kubernetes" / "serviceaccount.yaml").read_text()
            return "annotate"
    if head == "export" and "kubectl get secret" in command:
        assert f"secret {TOKEN_SECRET} " in command and "{.data.auth_token}" in command
        return "token"
    if head == "aws":
        for a in argv:
            if a.startswith("file://"):
                json.loads((REPO / a.removeprefix("file://")).read_text())
        for flag in ("--role-name", "--instance-profile-name"):
            if flag in argv and "eksctl" not in command:
                name = argv[argv.index(flag) + 1]
                assert any(arn.endswith(f"/{name}") for arn in _arns()) or name == "lee-results", name
        return "aws"
    if head == "eksctl":
        assert argv[argv.index("--name") + 1] == "lee-results"
        sa = (REPO / "kubernetes" / "serviceaccount.yaml").read_text()
        assert f":role/{argv[argv.index('--role-name') + 1]}" in sa
        return "eksctl"
    if head == "gcloud":
        gcp = (REPO / "cluster-gcp.yaml").read_text()
        assert "lee-results@my-gcp-project.iam.gserviceaccount.com" in gcp or argv[1:4] == [
            "iam",
            "service-accounts",
            "create",
        ]
        return "gcloud"
    if head == "ray":
        if argv[1] == "get-auth-token":
            home = tmp / "home"
            env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
            env["HOME"] = str(home)
            r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            assert (home / ".ray" / "auth_token").read_text().strip() == r.stdout.strip()
            return "ray get-auth-token"
        assert argv[2] in CLUSTER_FILES, argv
        if argv[1] == "exec":
            inner = shlex.split(argv[3] if argv[3] != "--run-env=host" else argv[4])
            if inner[0] == "lee":
                args = _lee_args(inner[1:])
                cfg = yaml.safe_load((REPO / argv[2]).read_text())
                assert args.config in cfg["file_mounts"]
            else:
                assert argv[3] == "--run-env=host" and "/var/log/lee-reevaluate.log" in inner
        return "ray " + argv[1]
    if head in ("python3", "crontab") or head.startswith("/srv/lee/venv/bin/pip"):
        return "venv"
    raise AssertionError(f"docs/deploy.md: no test covers {command!r}")


def test_every_command_of_the_deploy_page_is_checked(tmp_path):
    seen = {check(c, tmp_path) for c in commands()}
    # all three ways are there
    assert {"kubectl apply", "secret", "ray up", "ray get-auth-token", "crontab", "run.yaml", "aws"} <= seen


def test_the_page_check_refuses_what_it_does_not_know_and_wrong_names(tmp_path):
    with pytest.raises(AssertionError, match="no test covers"):
        check("terraform apply", tmp_path)
    with pytest.raises(AssertionError):
        check("kubectl create secret generic ray-token --from-literal=auth_token=x", tmp_path)
    with pytest.raises(AssertionError):
        check("kubectl apply -f kubernetes/nope.yaml", tmp_path)
    with pytest.raises(AssertionError):
        check("0 2 * * * lee reevaluate --config /srv/lee/run.yaml >> /srv/lee/reeval.log 2>&1", tmp_path)
    with pytest.raises(SystemExit):  # argparse: an unknown flag
        check("lee reevaluate --config /srv/lee/run.yaml --nightly", tmp_path)


def test_the_page_applies_every_manifest_of_kubernetes():
    applied = {
        argv[i + 1]
        for c in commands()
        if c.startswith("kubectl apply")
        for argv in [shlex.split(c)]
        for i, a in enumerate(argv)
        if a == "-f"
    }
    assert applied == {f"kubernetes/{p.name}" for p in (REPO / "kubernetes").glob("*.yaml")}
