"""KubeRay's CRD schemas as strict JSON Schemas (what ``kubectl apply --validate=strict`` enforces).

The Kubernetes API server validates a custom resource against its CRD's
``spec.versions[].schema.openAPIV3Schema``. Strict validation refuses unknown fields: every schema
object that lists ``properties`` and neither sets ``additionalProperties`` nor
``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties: false`` here. In KubeRay
v1.7.0's CRDs no object preserves unknown fields: the embedded Pod templates (containers, volumes,
tolerations...) are fully typed, so a misspelt container field fails too. The ``x-kubernetes-*``
extensions are otherwise dropped (``x-kubernetes-int-or-string`` is already an ``anyOf``); the CEL
rules of ``x-kubernetes-validations`` are not evaluated, and :func:`cel_ruled` lists the fields of a
manifest that carry one (the tests require none). An object without ``properties`` (a resource's
top-level ``metadata``) accepts anything in the CRD: the API server checks it as ObjectMeta, which
:func:`errors` does by hand for the keys a manifest may set.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parents[1] / "data" / "kuberay"
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayCronJob": "ray.io_raycronjobs.yaml",
}
OBJECT_META = {"name", "namespace", "labels", "annotations", "generateName"}


def strict(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema with unknown fields refused and the x-kubernetes-* keys removed."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def _crd(kind: str) -> dict:
    crd = yaml.load((CRDS / CRD_FILES[kind]).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["names"]["kind"] == kind
    return crd


@functools.cache
def crd_schema(kind: str, version: str) -> dict:
    """The strict schema of ``kind`` (``ray.io/<version>``) from the KubeRay CRD in tests/data/kuberay."""
    for v in _crd(kind)["spec"]["versions"]:
        if v["name"] == version:
            return strict(v["schema"]["openAPIV3Schema"])
    raise KeyError(f"{kind} has no version {version}")


def errors(doc: dict) -> list[str]:
    """Every reason the API server would refuse ``doc`` (a KubeRay resource), as ``path: message`` lines."""
    api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    group, _, version = api.partition("/")
    if group != "ray.io" or kind not in CRD_FILES:
        return [f"not a KubeRay resource: apiVersion {api!r}, kind {kind!r}"]
    found = []
    validator = jsonschema.Draft7Validator(crd_schema(kind, version))
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        found.append(f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}")
    meta = doc.get("metadata") or {}
    if not isinstance(meta.get("name"), str) or not meta["name"]:
        found.append("metadata.name: missing")
    found += [f"metadata.{k}: unknown field" for k in sorted(set(meta) - OBJECT_META)]
    return found


def cel_ruled(doc: dict) -> list[str]:
    """Paths of ``doc`` whose schema carries CEL rules (``x-kubernetes-validations``), which :func:`errors`
    does not evaluate: a manifest that sets none of them leaves nothing unchecked to the API server's CEL."""
    version = doc.get("apiVersion", "").partition("/")[2]
    for v in _crd(doc["kind"])["spec"]["versions"]:
        if v["name"] == version:
            schema = v["schema"]["openAPIV3Schema"]
    found: list[str] = []

    def walk(value: Any, s: dict, path: str) -> None:
        if s.get("x-kubernetes-validations"):
            found.append(path or "<root>")
        if isinstance(value, dict):
            for k, item in value.items():
                sub = (s.get("properties") or {}).get(k)
                if sub is None and isinstance(s.get("additionalProperties"), dict):
                    sub = s["additionalProperties"]
                if sub is not None:
                    walk(item, sub, f"{path}.{k}" if path else k)
        elif isinstance(value, list) and isinstance(s.get("items"), dict):
            for i, item in enumerate(value):
                walk(item, s["items"], f"{path}.{i}")

    walk(doc, schema, "")
    return found
