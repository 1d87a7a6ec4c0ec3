"""Offline checks of deploy/: the kustomize tree, the compose file and the Dockerfile.

Nothing here needs a cluster, Docker or the network. The kustomization is rendered by a
small renderer below that implements exactly the kustomize features deploy/k8s uses and
refuses any other key, so it cannot silently diverge from ``kubectl apply -k``. Every
rendered object is then validated against the Kubernetes OpenAPI schemas bundled in
``kubernetes-validate`` (strict: unknown fields are errors) or, for KEDA's ScaledObject,
against ``cloudcoil.models.keda``; and the semantic rules that schemas cannot express
(grace period vs drain timeout, selectors that select something, names that resolve) are
checked on top. Negative tests prove each validator can fail.
"""

from __future__ import annotations

import asyncio
import copy
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pydantic
import pytest
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"

# The newest Kubernetes schema bundled with kubernetes-validate.
K8S_VERSION = kubernetes_validate.latest_version()
NAMESPACE = "dragoman"
# Seconds the worker needs after its drain timeout to exit (close sockets, report, exit).
DRAIN_EXIT_MARGIN_S = 30


# --------------------------------------------------------------------------------------
# A tiny offline kustomize
# --------------------------------------------------------------------------------------


class UnsupportedKustomization(Exception):
    """The kustomization uses something this renderer does not implement."""


SUPPORTED_KEYS = {"apiVersion", "kind", "namespace", "labels", "images", "resources"}
CLUSTER_SCOPED = {
    "Namespace",
    "PriorityClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
NAMESPACED = {
    "Deployment",
    "Service",
    "ConfigMap",
    "Secret",
    "PodDisruptionBudget",
    "ScaledObject",
    "ServiceAccount",
    "Role",
    "RoleBinding",
}
POD_TEMPLATE_KINDS = {"Deployment"}  # kinds whose spec.template this renderer edits
OTHER_WORKLOADS = {"StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``registry:5000/a/b:tag@sha256:x`` → (``registry:5000/a/b``, ``tag``, ``sha256:x``)."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image, tag = image.rsplit(":", 1)
    return image, tag, digest


def _pod_specs(obj: dict) -> list[dict]:
    if obj["kind"] in POD_TEMPLATE_KINDS:
        return [obj["spec"]["template"]["spec"]]
    if obj["kind"] in OTHER_WORKLOADS:
        raise UnsupportedKustomization(f"renderer does not handle pod specs of {obj['kind']}")
    return []


def render_kustomization(directory: Path) -> list[dict]:
    """Render ``directory/kustomization.yaml`` like ``kustomize build`` for the keys it knows:
    ``resources`` (local files only, multi-document YAML), ``namespace``, ``labels``
    (``pairs``, ``includeTemplates``; ``includeSelectors`` must be false) and ``images``
    (``name``, ``newName``, ``newTag``, ``digest``). Any other key raises."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kust) - SUPPORTED_KEYS
    if unknown:
        raise UnsupportedKustomization(f"kustomization keys not implemented: {sorted(unknown)}")
    if kust.get("apiVersion") != "kustomize.config.k8s.io/v1beta1":
        raise UnsupportedKustomization(f"apiVersion {kust.get('apiVersion')!r}")
    if kust.get("kind") != "Kustomization":
        raise UnsupportedKustomization(f"kind {kust.get('kind')!r}")

    objs: list[dict] = []
    for res in kust.get("resources", []):
        path = directory / res
        if "://" in res or not path.is_file():
            raise UnsupportedKustomization(f"resource {res!r}: only local files are supported")
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            if not isinstance(doc, dict) or not {"apiVersion", "kind", "metadata"} <= set(doc):
                raise ValueError(f"{res}: not a Kubernetes object: {doc!r:.80}")
            objs.append(doc)

    namespace = kust.get("namespace")
    if namespace is not None:
        for obj in objs:
            kind = obj["kind"]
            if kind in NAMESPACED:
                obj["metadata"]["namespace"] = namespace
            elif kind == "Namespace":
                # kustomize renames Namespace objects to the namespace; keep it explicit.
                if obj["metadata"]["name"] != namespace:
                    raise UnsupportedKustomization(f"Namespace {obj['metadata']['name']!r}")
            elif kind not in CLUSTER_SCOPED:
                raise UnsupportedKustomization(f"renderer does not know the scope of {kind}")

    for entry in kust.get("labels", []):
        extra = set(entry) - {"pairs", "includeSelectors", "includeTemplates"}
        if extra:
            raise UnsupportedKustomization(f"labels keys not implemented: {sorted(extra)}")
        if entry.get("includeSelectors"):
            raise UnsupportedKustomization("labels.includeSelectors: true is not implemented")
        pairs = entry["pairs"]
        for obj in objs:
            obj["metadata"].setdefault("labels", {}).update(pairs)
            if entry.get("includeTemplates"):
                if obj["kind"] in OTHER_WORKLOADS:
                    raise UnsupportedKustomization(f"includeTemplates for {obj['kind']}")
                if obj["kind"] in POD_TEMPLATE_KINDS:
                    tmeta = obj["spec"]["template"].setdefault("metadata", {})
                    tmeta.setdefault("labels", {}).update(pairs)

    for entry in kust.get("images", []):
        extra = set(entry) - {"name", "newName", "newTag", "digest"}
        if extra:
            raise UnsupportedKustomization(f"images keys not implemented: {sorted(extra)}")
        for obj in objs:
            for pod in _pod_specs(obj):
                for c in pod.get("containers", []) + pod.get("initContainers", []):
                    name, tag, digest = split_image(c["image"])
                    if name != entry["name"]:
                        continue
                    name = entry.get("newName", name)
                    if "digest" in entry:
                        ref = "@" + entry["digest"]
                    elif "newTag" in entry:
                        ref = ":" + entry["newTag"]
                    else:
                        ref = (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
                    c["image"] = name + ref

    seen: set[tuple[str, str, str, str | None]] = set()
    for obj in objs:
        key = (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])
        key = (*key, obj["metadata"].get("namespace"))
        if key in seen:
            raise ValueError(f"duplicate object {key}")
        seen.add(key)
    return objs


# --------------------------------------------------------------------------------------
# Validators
# --------------------------------------------------------------------------------------


class UnknownFields(ValueError):
    pass


def validate_scaledobject(obj: dict) -> ScaledObject:
    """Schema-check a KEDA ScaledObject. The pydantic models ignore unknown keys, so a typo
    such as ``minReplicas`` would pass; a lossless round trip proves every key is known."""
    model = ScaledObject.model_validate(obj)
    back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    if back != obj:
        raise UnknownFields(f"fields KEDA does not know, or of the wrong type: {_diff(obj, back)}")
    return model


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in b:
                out.append(f"{path}.{k}")
            elif k not in a:
                out.append(f"{path}.{k} (added)")
            else:
                out += _diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _diff(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def validate_object(obj: dict) -> None:
    if obj["apiVersion"] == "keda.sh/v1alpha1":
        if obj["kind"] != "ScaledObject":
            raise AssertionError(f"no validator for KEDA kind {obj['kind']}")
        validate_scaledobject(obj)
    else:
        kubernetes_validate.validate(obj, desired_version=K8S_VERSION, strict=True)


# --------------------------------------------------------------------------------------
# Helpers over the rendered objects
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return render_kustomization(K8S)


def by_kind(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def one(objs: list[dict], kind: str, name: str) -> dict:
    found = by_kind(objs, kind)
    assert name in found, f"no {kind} {name!r} in the render (have {sorted(found)})"
    return found[name]


def container(deploy: dict, name: str | None = None) -> dict:
    cs = deploy["spec"]["template"]["spec"]["containers"]
    if name is None:
        assert len(cs) == 1, f"{deploy['metadata']['name']}: expected one container"
        return cs[0]
    return next(c for c in cs if c["name"] == name)


def env_list(c: dict) -> list[dict]:
    return c.get("env", [])


def env_value(c: dict, name: str) -> str:
    for e in env_list(c):
        if e["name"] == name:
            assert "value" in e, f"{name} is not a literal value"
            return e["value"]
    raise AssertionError(f"{c['name']}: no env {name}")


def container_env(c: dict, objs: list[dict]) -> dict[str, str]:
    """Literal environment of a container: envFrom ConfigMaps, then env (later wins)."""
    out: dict[str, str] = {}
    cms = by_kind(objs, "ConfigMap")
    for src in c.get("envFrom", []):
        name = src["configMapRef"]["name"]
        assert name in cms, f"envFrom ConfigMap {name!r} is not in the render"
        out.update(cms[name]["data"])
    for e in env_list(c):
        if "value" in e:
            out[e["name"]] = e["value"]
    return out


def port_number(c: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    for p in c.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"{c['name']}: no port named {port!r}")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def deployments_selected(objs: list[dict], selector: dict[str, str], ns: str) -> list[str]:
    return [
        d["metadata"]["name"]
        for d in by_kind(objs, "Deployment").values()
        if d["metadata"].get("namespace") == ns
        and selects(selector, d["spec"]["template"]["metadata"]["labels"])
    ]


def grace_period_problems(worker: dict) -> list[str]:
    """The drain trap: the kubelet SIGKILLs whatever still runs when the grace period ends."""
    spec = worker["spec"]["template"]["spec"]
    drain = float(env_value(container(worker), "DRAGOMAN_DRAIN_TIMEOUT_S"))
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace < drain + DRAIN_EXIT_MARGIN_S:
        return [
            f"terminationGracePeriodSeconds {grace} < DRAGOMAN_DRAIN_TIMEOUT_S {drain:g} "
            f"+ {DRAIN_EXIT_MARGIN_S} s margin: running calls would be SIGKILLed"
        ]
    return []


DRAGOMAN_KINDS = {"dragoman-api": "api", "dragoman-worker": "worker"}


# --------------------------------------------------------------------------------------
# The renderer itself
# --------------------------------------------------------------------------------------


def _write_kustomization(tmp_path: Path, extra: dict) -> Path:
    (tmp_path / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n"
    )
    kust = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["cm.yaml"],
        **extra,
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kust))
    return tmp_path


@pytest.mark.parametrize(
    "extra",
    [
        {"patches": [{"path": "p.yaml"}]},
        {"commonLabels": {"a": "b"}},
        {"configMapGenerator": [{"name": "g", "literals": ["a=b"]}]},
        {"labels": [{"pairs": {"a": "b"}, "includeSelectors": True}]},
        {"images": [{"name": "x", "newTag": "1", "tagSuffix": "y"}]},
        {"resources": ["cm.yaml", "sub-dir/"]},
        {"resources": ["https://example.invalid/base"]},
    ],
    ids=lambda e: next(iter(e)),
)
def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path, extra: dict) -> None:
    with pytest.raises(UnsupportedKustomization):
        render_kustomization(_write_kustomization(tmp_path, extra))


def test_renderer_applies_namespace_labels_and_images(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "d"},
                "spec": {
                    "selector": {"matchLabels": {"app": "d"}},
                    "template": {
                        "metadata": {"labels": {"app": "d"}},
                        "spec": {"containers": [{"name": "c", "image": "reg:5000/app:1"}]},
                    },
                },
            }
        )
    )
    d = _write_kustomization(
        tmp_path,
        {
            "resources": ["cm.yaml", "d.yaml"],
            "namespace": "ns",
            "labels": [{"pairs": {"team": "t"}, "includeTemplates": True}],
            "images": [{"name": "reg:5000/app", "newName": "other/app", "newTag": "2"}],
        },
    )
    cm, dep = render_kustomization(d)
    assert cm["metadata"] == {"name": "x", "namespace": "ns", "labels": {"team": "t"}}
    assert dep["metadata"]["namespace"] == "ns"
    assert dep["spec"]["selector"]["matchLabels"] == {"app": "d"}
    assert dep["spec"]["template"]["metadata"]["labels"] == {"app": "d", "team": "t"}
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "other/app:2"


def test_render_namespace_and_labels(rendered: list[dict]) -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kust["namespace"] == NAMESPACE
    assert [o["metadata"]["name"] for o in rendered if o["kind"] == "Namespace"] == [NAMESPACE]
    for o in rendered:
        ns = o["metadata"].get("namespace")
        if o["kind"] in CLUSTER_SCOPED:
            assert ns is None, f"cluster-scoped {o['kind']} with a namespace"
        else:
            assert ns == NAMESPACE, f"{o['kind']}/{o['metadata']['name']} not in {NAMESPACE}"
        assert o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "dragoman"
    for d in by_kind(rendered, "Deployment").values():
        tpl = d["spec"]["template"]["metadata"]["labels"]
        assert tpl["app.kubernetes.io/part-of"] == "dragoman"
        # Selectors are immutable on live Deployments: the renderer must not touch them,
        # and each must select its own pod template.
        assert "app.kubernetes.io/part-of" not in d["spec"]["selector"]["matchLabels"]
        assert selects(d["spec"]["selector"]["matchLabels"], tpl), d["metadata"]["name"]


# --------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------


def test_schema_version_is_a_recent_bundled_one() -> None:
    assert K8S_VERSION in kubernetes_validate.utils.all_versions()
    assert tuple(int(x) for x in K8S_VERSION.split(".")[:2]) >= (1, 30)


def test_every_rendered_object_is_schema_valid(rendered: list[dict]) -> None:
    kinds = {(o["apiVersion"], o["kind"]) for o in rendered}
    assert ("keda.sh/v1alpha1", "ScaledObject") in kinds
    for obj in rendered:
        try:
            validate_object(obj)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {e.message}")
        except (pydantic.ValidationError, UnknownFields) as e:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {e}")


def test_validators_reject_broken_deployments(rendered: list[dict]) -> None:
    good = one(rendered, "Deployment", "dragoman-api")
    kubernetes_validate.validate(good, desired_version=K8S_VERSION, strict=True)

    bad = copy.deepcopy(good)
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, desired_version=K8S_VERSION, strict=True)

    typo = copy.deepcopy(good)  # strict: an unknown field is an error, not ignored
    typo["spec"]["template"]["spec"]["terminationGracePeriod"] = 660
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, desired_version=K8S_VERSION, strict=True)

    no_image = copy.deepcopy(good)
    del no_image["spec"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(no_image, desired_version=K8S_VERSION, strict=True)


def test_validators_reject_broken_scaledobjects(rendered: list[dict]) -> None:
    good = one(rendered, "ScaledObject", "dragoman-worker")
    validate_scaledobject(good)

    no_triggers = copy.deepcopy(good)
    del no_triggers["spec"]["triggers"]
    with pytest.raises(pydantic.ValidationError):
        validate_scaledobject(no_triggers)

    untyped = copy.deepcopy(good)
    del untyped["spec"]["triggers"][0]["type"]
    with pytest.raises(pydantic.ValidationError):
        validate_scaledobject(untyped)

    no_target = copy.deepcopy(good)
    del no_target["spec"]["scaleTargetRef"]["name"]
    with pytest.raises(pydantic.ValidationError):
        validate_scaledobject(no_target)

    typo = copy.deepcopy(good)
    typo["spec"]["minReplicas"] = typo["spec"].pop("minReplicaCount")
    with pytest.raises(UnknownFields):
        validate_scaledobject(typo)

    number = copy.deepcopy(good)  # trigger metadata values are strings in KEDA's CRD
    number["spec"]["triggers"][0]["metadata"]["targetValue"] = 1
    with pytest.raises(pydantic.ValidationError):
        validate_scaledobject(number)


# --------------------------------------------------------------------------------------
# Semantics the schemas cannot see
# --------------------------------------------------------------------------------------


def test_dragoman_containers_run_the_cli_under_tini(rendered: list[dict]) -> None:
    entrypoint = dockerfile_instruction("ENTRYPOINT")
    assert yaml.safe_load(entrypoint)[0].endswith("/tini"), entrypoint
    for name, role in DRAGOMAN_KINDS.items():
        c = container(one(rendered, "Deployment", name))
        # args replaces the image's CMD only; a `command` would replace tini as well.
        assert "command" not in c, f"{name}: `command` would bypass tini"
        assert c["args"] == ["dragoman", role], c["args"]
        assert c["image"] == "dragoman:latest"
        assert c["imagePullPolicy"] == "IfNotPresent"
    images = [
        c["image"]
        for d in by_kind(rendered, "Deployment").values()
        for c in d["spec"]["template"]["spec"]["containers"]
        if "args" in c and c["args"][:1] == ["dragoman"]
    ]
    assert sorted(images) == ["dragoman:latest"] * 2


def test_worker_grace_period_outlasts_the_drain(rendered: list[dict]) -> None:
    worker = one(rendered, "Deployment", "dragoman-worker")
    assert grace_period_problems(worker) == []
    assert float(env_value(container(worker), "DRAGOMAN_DRAIN_TIMEOUT_S")) == 600

    short = copy.deepcopy(worker)
    short["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 600
    assert grace_period_problems(short)
    default = copy.deepcopy(worker)
    del default["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace_period_problems(default)
    longer_drain = copy.deepcopy(worker)
    for e in container(longer_drain)["env"]:
        if e["name"] == "DRAGOMAN_DRAIN_TIMEOUT_S":
            e["value"] = "900"
    assert grace_period_problems(longer_drain)


def test_worker_pod_shape(rendered: list[dict]) -> None:
    worker = one(rendered, "Deployment", "dragoman-worker")
    spec = worker["spec"]["template"]["spec"]
    c = container(worker)
    env = container_env(c, rendered)

    assert "replicas" not in worker["spec"], "KEDA's HPA owns replicas; apply would reset it"
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"

    port = int(env["DRAGOMAN_WORKER_PORT"])
    (p,) = c["ports"]
    assert p["containerPort"] == p["hostPort"] == port
    ready = c["readinessProbe"]["httpGet"]
    assert ready["path"] == "/healthz"
    assert port_number(c, ready["port"]) == port
    # /healthz is 503 for the whole drain: as liveness it would kill a draining worker.
    for probe in ("livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] != "/healthz", probe
        assert port_number(c, c[probe]["httpGet"]["port"]) == port

    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    script = pre_stop[-1]
    assert pre_stop[:2] == ["sh", "-c"] and "kill -TERM 1" in script, pre_stop
    assert "while kill -0 1" in script, "the hook must wait for the drain to finish"

    (term,) = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert selects(
        term["labelSelector"]["matchLabels"], worker["spec"]["template"]["metadata"]["labels"]
    )

    fields = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in env_list(c)
        if "fieldRef" in e.get("valueFrom", {})
    }
    assert fields["DRAGOMAN_MEDIA_ADDRESS"] == "status.hostIP"
    assert fields["DRAGOMAN_NODE_ID"] in ("spec.nodeName", "metadata.name")
    url = urlsplit(
        env["DRAGOMAN_WORKER_URL"]
        .replace("$(DRAGOMAN_MEDIA_ADDRESS)", "10.0.0.7")
        .replace("$(DRAGOMAN_WORKER_PORT)", env["DRAGOMAN_WORKER_PORT"])
    )
    assert (url.scheme, url.hostname, url.port) == ("http", "10.0.0.7", port)
    assert env["DRAGOMAN_WORKER_HOST"] == "0.0.0.0", "probes reach the node IP, not loopback"
    assert "cpu" not in c["resources"].get("limits", {}), "CPU throttling makes audio late"
    ann = worker["spec"]["template"]["metadata"]["annotations"]
    assert ann["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"


def test_scale_down_picks_empty_workers_by_pod_deletion_cost(rendered: list[dict]) -> None:
    """The worker keeps its pod's controller.kubernetes.io/pod-deletion-cost current: it
    needs its own pod's name, a token of a service account that may patch pods, and nothing
    more (an admission policy narrows the patch to that annotation on its own pod)."""
    worker = one(rendered, "Deployment", "dragoman-worker")
    spec = worker["spec"]["template"]["spec"]
    c = container(worker)
    fields = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in env_list(c)
        if "fieldRef" in e.get("valueFrom", {})
    }
    assert fields["DRAGOMAN_POD_NAME"] == "metadata.name", "hostNetwork: HOSTNAME is the node"
    assert fields["DRAGOMAN_POD_NAMESPACE"] == "metadata.namespace"
    assert spec["automountServiceAccountToken"] is True
    sa = one(rendered, "ServiceAccount", spec["serviceAccountName"])
    assert sa.get("automountServiceAccountToken") is False, "only pods that ask get the token"
    # No other workload gets a token.
    for d in by_kind(rendered, "Deployment").values():
        if d is not worker:
            assert d["spec"]["template"]["spec"].get("automountServiceAccountToken") is False

    # RBAC: patch on pods, nothing else, for this service account, in this namespace.
    bindings = [
        b
        for b in by_kind(rendered, "RoleBinding").values()
        if {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
        in b["subjects"]
    ]
    (binding,) = bindings
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"]["kind"] == "Role", "namespaced, not a ClusterRole"
    role = one(rendered, "Role", binding["roleRef"]["name"])
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]

    # The admission policy matches that service account's pod updates in this namespace.
    vap = one(rendered, "ValidatingAdmissionPolicy", "dragoman-worker-pod-deletion-cost")
    (cond,) = vap["spec"]["matchConditions"]
    assert f"'system:serviceaccount:{NAMESPACE}:{sa['metadata']['name']}'" in cond["expression"]
    (rule,) = vap["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["pods"] and "UPDATE" in rule["operations"]
    assert vap["spec"]["failurePolicy"] == "Fail"
    text = " ".join(v["expression"] for v in vap["spec"]["validations"])
    for needed in (
        "authentication.kubernetes.io/pod-name",
        "object.spec == oldObject.spec",
        "controller.kubernetes.io/pod-deletion-cost",
    ):
        assert needed in text, needed
    vapb = one(rendered, "ValidatingAdmissionPolicyBinding", vap["metadata"]["name"])
    assert vapb["spec"]["policyName"] == vap["metadata"]["name"]
    assert vapb["spec"]["validationActions"] == ["Deny"]
    ns_labels = vapb["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
    assert ns_labels == {"kubernetes.io/metadata.name": NAMESPACE}

    # The worker sets exactly the annotation Kubernetes reads.
    from dragoman.worker.k8s_cost import ANNOTATION

    assert ANNOTATION == "controller.kubernetes.io/pod-deletion-cost" and ANNOTATION in text


def test_env_references_are_defined_before_use(rendered: list[dict]) -> None:
    for d in by_kind(rendered, "Deployment").values():
        for c in d["spec"]["template"]["spec"]["containers"]:
            defined = set(container_env(c, rendered)) - {e["name"] for e in env_list(c)}
            for e in env_list(c):
                for ref in re.findall(r"\$\((\w+)\)", e.get("value", "")):
                    assert ref in defined, (
                        f"{c['name']}: {e['name']} uses $({ref}) before it is set"
                    )
                defined.add(e["name"])


def test_api_service_and_probes(rendered: list[dict]) -> None:
    api = one(rendered, "Deployment", "dragoman-api")
    c = container(api)
    env = container_env(c, rendered)
    assert api["spec"]["replicas"] >= 2
    port = int(env["DRAGOMAN_PORT"])
    assert env["DRAGOMAN_HOST"] == "0.0.0.0"
    assert port_number(c, "http") == port == 8000
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["livenessProbe"]["httpGet"]["path"] != "/healthz", "a Redis outage would restart all"
    # Health and metrics answer only on the internal port (404 on the public one).
    internal = int(env["DRAGOMAN_INTERNAL_PORT"])
    assert internal != port and port_number(c, "internal") == internal
    for probe in ("readinessProbe", "livenessProbe"):
        assert port_number(c, c[probe]["httpGet"]["port"]) == internal, probe
    annotations = api["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == internal
    assert c["lifecycle"]["preStop"], "Service-routed: wait for endpoint removal"
    assert api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 5

    svc = one(rendered, "Service", "dragoman-api")
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert deployments_selected(rendered, svc["spec"]["selector"], NAMESPACE) == ["dragoman-api"]
    (sp,) = svc["spec"]["ports"]
    assert sp["port"] == 80
    assert port_number(c, sp["targetPort"]) == port  # the public port only

    inside = one(rendered, "Service", "dragoman-api-internal")
    assert inside["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert deployments_selected(rendered, inside["spec"]["selector"], NAMESPACE) == ["dragoman-api"]
    assert [port_number(c, p["targetPort"]) for p in inside["spec"]["ports"]] == [internal]


def test_internal_token_secret_reaches_api_and_worker(rendered: list[dict]) -> None:
    secrets = by_kind(rendered, "Secret")
    for name in DRAGOMAN_KINDS:
        c = container(one(rendered, "Deployment", name))
        (ref,) = [
            e["valueFrom"]["secretKeyRef"]
            for e in env_list(c)
            if e["name"] == "DRAGOMAN_INTERNAL_TOKEN"
        ]
        secret = secrets.get(ref["name"])
        assert secret is not None, f"{name}: Secret {ref['name']!r} is not in the render"
        keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
        assert ref["key"] in keys


def test_turn_is_wired_to_the_api_and_the_workers_media_range_is_set(
    rendered: list[dict],
) -> None:
    """coturn and the api share one static-auth-secret (the api mints pages' credentials
    with it), the TURN URLs pages get name the ports the TURN Service exposes, and the
    worker's Janus uses a fixed UDP range (what the firewall opens)."""
    api = container(one(rendered, "Deployment", "dragoman-api"))
    (api_ref,) = [
        e["valueFrom"]["secretKeyRef"] for e in env_list(api) if e["name"] == "DRAGOMAN_TURN_SECRET"
    ]
    turn = container(one(rendered, "Deployment", "dragoman-coturn"))
    (turn_ref,) = [e["valueFrom"]["secretKeyRef"] for e in env_list(turn)]
    assert api_ref == turn_ref
    secret = one(rendered, "Secret", api_ref["name"])
    assert api_ref["key"] in secret["stringData"]
    args = turn["args"]
    assert "--use-auth-secret" in args and "--static-auth-secret=$(TURN_SECRET)" in args
    assert "--lt-cred-mech" not in args, "REST-API credentials, not a static user"

    env = container_env(api, rendered)
    svc = one(rendered, "Service", "dragoman-turn")
    exposed = {(p["port"], p["protocol"]) for p in svc["spec"]["ports"]}
    urls = env["DRAGOMAN_TURN_URLS"].split(",")
    for url in urls:
        scheme, rest = url.split(":", 1)
        port = int(rest.split(":")[1].split("?")[0])
        transport = rest.split("transport=")[1].upper()
        assert (port, transport) in exposed, url
    assert any(u.startswith("turns:") and ":443?" in u for u in urls), "TLS on 443"
    assert deployments_selected(rendered, svc["spec"]["selector"], NAMESPACE) == ["dragoman-coturn"]

    worker_env = container_env(container(one(rendered, "Deployment", "dragoman-worker")), rendered)
    low, high = (int(x) for x in worker_env["DRAGOMAN_MEDIA_PORT_RANGE"].split("-"))
    assert 1024 < low < high <= 65535


def test_shared_config_is_shared(rendered: list[dict]) -> None:
    (cm,) = by_kind(rendered, "ConfigMap").values()
    envs = {
        n: container_env(container(one(rendered, "Deployment", n)), rendered)
        for n in DRAGOMAN_KINDS
    }
    for key in ("DRAGOMAN_REGISTRY", "DRAGOMAN_MAX_CALLS", "DRAGOMAN_NODE_TTL_S"):
        assert key in cm["data"], key
        # The api sizes the fleet with the workers' MAX_CALLS: one value for both.
        assert envs["dragoman-api"][key] == envs["dragoman-worker"][key] == cm["data"][key]

    reg = urlsplit(cm["data"]["DRAGOMAN_REGISTRY"])
    assert reg.scheme == "redis"
    svc = one(rendered, "Service", reg.hostname)
    assert reg.port in [p["port"] for p in svc["spec"]["ports"]]
    assert deployments_selected(rendered, svc["spec"]["selector"], NAMESPACE) == ["dragoman-redis"]
    assert one(rendered, "Deployment", "dragoman-redis")["spec"]["replicas"] == 1

    so = one(rendered, "ScaledObject", "dragoman-worker")
    assert int(cm["data"]["DRAGOMAN_MAX_NODES"]) == so["spec"]["maxReplicaCount"]


def test_scaledobject_drives_the_worker_deployment(rendered: list[dict]) -> None:
    so = one(rendered, "ScaledObject", "dragoman-worker")
    spec = so["spec"]
    ref = spec["scaleTargetRef"]
    assert ref.get("kind", "Deployment") == "Deployment"
    assert ref.get("apiVersion", "apps/v1") == "apps/v1"
    target = one(rendered, "Deployment", ref["name"])
    assert container(target)["args"] == ["dragoman", "worker"]
    assert target["metadata"]["namespace"] == so["metadata"]["namespace"]

    assert spec["minReplicaCount"] >= 1
    assert spec["maxReplicaCount"] > spec["minReplicaCount"]
    assert spec["pollingInterval"] <= 15

    (trigger,) = spec["triggers"]
    assert trigger["type"] == "metrics-api"
    # AverageValue with target 1: replicas = ceil(desired_nodes / 1). "Value" would
    # multiply the current replica count by desired_nodes.
    assert trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    assert meta["targetValue"] == "1"
    assert meta["valueLocation"] == "desired_nodes"
    assert meta.get("format", "json") == "json"
    url = urlsplit(meta["url"])
    assert url.path == "/v1/fleet/autoscale"
    assert url.port is not None, "the autoscale view is on the api's internal port"
    svc_name, svc_ns, svc_tail = url.hostname.split(".", 2)
    assert svc_tail in ("svc", "svc.cluster.local")
    svc = one(rendered, "Service", svc_name)
    assert svc_ns == svc["metadata"]["namespace"]
    assert (url.port or 80) in [p["port"] for p in svc["spec"]["ports"]]
    assert deployments_selected(rendered, svc["spec"]["selector"], svc_ns) == ["dragoman-api"]

    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    down = behavior["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 300, "scale-down must be slow"
    # HPA rounds a Percent scale-down up; with few replicas only a Pods policy moves.
    assert any(p["type"] == "Pods" for p in down["policies"])
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0


def test_placeholders_hold_worker_sized_nodes(rendered: list[dict]) -> None:
    classes = by_kind(rendered, "PriorityClass")
    ph_class = classes["dragoman-placeholder"]
    # -10 is the cluster autoscaler's default expendable cutoff: pods *below* it do not
    # trigger a scale-up, so -10 is the lowest priority that still keeps nodes booted.
    assert ph_class["value"] == -10
    assert ph_class["globalDefault"] is False
    assert ph_class.get("preemptionPolicy") == "Never"

    ph = one(rendered, "Deployment", "dragoman-placeholder")
    worker = one(rendered, "Deployment", "dragoman-worker")
    ph_spec, w_spec = ph["spec"]["template"]["spec"], worker["spec"]["template"]["spec"]
    assert ph_spec["priorityClassName"] == "dragoman-placeholder"
    w_class = classes[w_spec["priorityClassName"]]
    assert w_class["value"] > 0 > ph_class["value"]
    assert w_class.get("preemptionPolicy", "PreemptLowerPriority") == "PreemptLowerPriority"

    assert ph["spec"]["replicas"] >= 1
    (pause,) = ph_spec["containers"]
    assert pause["image"].rsplit("/", 1)[-1].startswith("pause:")
    assert pause["resources"]["requests"] == container(worker)["resources"]["requests"]
    (prepull,) = ph_spec["initContainers"]
    assert prepull["image"] == container(worker)["image"]
    (term,) = ph_spec["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert selects(
        term["labelSelector"]["matchLabels"], ph["spec"]["template"]["metadata"]["labels"]
    )
    assert deployments_selected(rendered, term["labelSelector"]["matchLabels"], NAMESPACE) == [
        "dragoman-placeholder"
    ]


def test_pdbs_select_existing_pods(rendered: list[dict]) -> None:
    pdbs = by_kind(rendered, "PodDisruptionBudget")
    expected = {"dragoman-api": ("minAvailable", 1), "dragoman-worker": ("maxUnavailable", 1)}
    assert set(pdbs) == set(expected)
    for name, (field, value) in expected.items():
        pdb = pdbs[name]
        assert pdb["spec"][field] == value
        sel = pdb["spec"]["selector"]["matchLabels"]
        assert deployments_selected(rendered, sel, pdb["metadata"]["namespace"]) == [name]
    api = one(rendered, "Deployment", "dragoman-api")
    assert pdbs["dragoman-api"]["spec"]["minAvailable"] < api["spec"]["replicas"]


# --------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------


def dockerfile_instruction(name: str) -> str:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = [
        line.split(None, 1)[1]
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#") and line.split()[0] == name
    ]
    assert found, f"no {name} in the Dockerfile"
    return found[-1]


def test_dockerfile() -> None:
    assert dockerfile_instruction("FROM").startswith("python:3.11-slim")
    entrypoint = yaml.safe_load(dockerfile_instruction("ENTRYPOINT"))
    assert entrypoint[0].endswith("/tini") and "-g" not in entrypoint, entrypoint
    assert yaml.safe_load(dockerfile_instruction("CMD"))[0] == "dragoman"
    assert dockerfile_instruction("USER") not in ("root", "0")
    env = dict(kv.split("=", 1) for kv in shlex.split(dockerfile_instruction("ENV")) if "=" in kv)
    assert env["DRAGOMAN_WHISPER_MODEL_PATH"] == "/opt/dragoman/models/whisper-base"
    assert "assemble_whisper_base(Path('/opt/dragoman/models'))" in DOCKERFILE.read_text()
    # The worker starts Janus (the media gateway) itself: it must be in the image.
    installs = [ln for ln in DOCKERFILE.read_text().splitlines() if "apt-get install" in ln]
    assert any(" janus" in ln for ln in installs), installs


# --------------------------------------------------------------------------------------
# docker compose (one Linux host)
# --------------------------------------------------------------------------------------


def go_duration_s(value: str | int) -> float:
    """Compose durations: ``660s``, ``11m``, ``1m30s``, ``1h``; a bare number is seconds."""
    if isinstance(value, int | float):
        return float(value)
    parts = re.fullmatch(r"(?:\d+(?:\.\d+)?(?:h|m|s|ms|us))+", value)
    if not parts:
        raise ValueError(f"not a duration: {value!r}")
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * unit[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value))


def stop_grace_problems(service: dict) -> list[str]:
    drain = float(service["environment"]["DRAGOMAN_DRAIN_TIMEOUT_S"])
    grace = go_duration_s(service.get("stop_grace_period", "10s"))
    if grace < drain + DRAIN_EXIT_MARGIN_S:
        return [f"stop_grace_period {grace:g}s < drain {drain:g}s + margin"]
    return []


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_role(service: dict) -> str | None:
    cmd = service.get("command")
    if isinstance(cmd, str):
        cmd = shlex.split(cmd)
    if cmd and cmd[0] == "dragoman":
        return cmd[1]
    return None


def test_compose_services(compose: dict) -> None:
    services = compose["services"]
    roles = {name: compose_role(s) for name, s in services.items()}
    apis = sorted(n for n, r in roles.items() if r == "api")
    workers = sorted(n for n, r in roles.items() if r == "worker")
    assert len(apis) == 2 and len(workers) == 2, roles
    assert services["redis"]["image"].startswith("redis:")
    assert services["coturn"]["image"].startswith("coturn/coturn")

    dragoman = [services[n] for n in apis + workers]
    for s in dragoman:
        assert s["image"] == "dragoman:latest"
        assert s["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (COMPOSE.parent / s["build"]["context"] / s["build"]["dockerfile"]).is_file()
        assert s["depends_on"]["redis"]["condition"] == "service_healthy"
        env = s["environment"]
        # fail fast on a missing secret instead of starting with an empty token
        assert re.fullmatch(
            r"\$\{DRAGOMAN_INTERNAL_TOKEN:\?[^}]*\}", env["DRAGOMAN_INTERNAL_TOKEN"]
        )
    for key in ("DRAGOMAN_REGISTRY", "DRAGOMAN_MAX_CALLS", "DRAGOMAN_NODE_TTL_S"):
        assert len({s["environment"][key] for s in dragoman}) == 1, key

    # Every service shares the host's network: the registry URL and worker URLs are loopback.
    for name, s in services.items():
        assert s.get("network_mode") == "host", name
        assert "ports" not in s, f"{name}: host networking publishes nothing"
    registry = urlsplit(dragoman[0]["environment"]["DRAGOMAN_REGISTRY"])
    redis_cmd = services["redis"]["command"]
    assert registry.hostname == redis_cmd[redis_cmd.index("--bind") + 1] == "127.0.0.1"
    assert str(registry.port) == redis_cmd[redis_cmd.index("--port") + 1]

    api_ports = [int(services[n]["environment"]["DRAGOMAN_PORT"]) for n in apis]
    assert len(set(api_ports)) == 2


def test_compose_workers_are_distinct_and_drain(compose: dict) -> None:
    services = compose["services"]
    workers = [s for s in services.values() if compose_role(s) == "worker"]
    ids = [w["environment"]["DRAGOMAN_NODE_ID"] for w in workers]
    ports = [int(w["environment"]["DRAGOMAN_WORKER_PORT"]) for w in workers]
    assert len(set(ids)) == len(ids) == 2
    assert len(set(ports)) == 2
    for w, port in zip(workers, ports, strict=True):
        url = urlsplit(w["environment"]["DRAGOMAN_WORKER_URL"])
        assert url.port == port
        assert stop_grace_problems(w) == []
    api_ports = {
        int(s["environment"]["DRAGOMAN_PORT"])
        for s in services.values()
        if compose_role(s) == "api"
    }
    assert not api_ports & set(ports)

    short = copy.deepcopy(workers[0])
    short["stop_grace_period"] = "1m"
    assert stop_grace_problems(short)
    del short["stop_grace_period"]
    assert stop_grace_problems(short)
    assert go_duration_s("1m30s") == 90 and go_duration_s("11m") == 660


def test_compose_coturn_is_configured_by_args(compose: dict) -> None:
    cmd = compose["services"]["coturn"]["command"]
    assert "-n" in cmd, "no config file: everything is on the command line"
    args = dict(a.split("=", 1) for a in cmd if a.startswith("--") and "=" in a)
    assert int(args["--min-port"]) < int(args["--max-port"])
    assert "--use-auth-secret" in cmd and "--lt-cred-mech" not in cmd
    assert re.fullmatch(r"\$\{DRAGOMAN_TURN_SECRET:\?[^}]*\}", args["--static-auth-secret"]), args
    assert args["--tls-listening-port"] == "443"
    # The api mints pages' credentials with the same secret and lists the same ports.
    services = compose["services"]
    for s in services.values():
        if compose_role(s) == "api":
            assert s["environment"]["DRAGOMAN_TURN_SECRET"] == args["--static-auth-secret"]
            urls = s["environment"]["DRAGOMAN_TURN_URLS"].split(",")
            assert any(":3478?transport=tcp" in u for u in urls)
            assert any(u.startswith("turns:") and ":443?" in u for u in urls)
    # Each worker's Janus gets its own UDP range on the shared host.
    ranges = [
        tuple(int(x) for x in s["environment"]["DRAGOMAN_MEDIA_PORT_RANGE"].split("-"))
        for s in services.values()
        if compose_role(s) == "worker"
    ]
    (a_lo, a_hi), (b_lo, b_hi) = sorted(ranges)
    assert a_hi < b_lo, ranges
    env_example = (COMPOSE.parent / "env.example").read_text()
    for var in re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()):
        assert re.search(rf"^{var}=", env_example, re.M), f"{var} missing from env.example"


# --------------------------------------------------------------------------------------
# The worker's side: dragoman.worker.k8s_cost against a fake API server
# --------------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def _fake_api_server(status: list[int]) -> tuple[Any, list[dict]]:
    """A local HTTP server that answers pod PATCHes like the API server (``status[0]``)."""
    from aiohttp import web

    seen: list[dict] = []

    async def patch(request: web.Request) -> web.Response:
        seen.append(
            {
                "path": request.path,
                "auth": request.headers.get("Authorization"),
                "type": request.headers.get("Content-Type"),
                "body": await request.json(),
            }
        )
        return web.json_response({"kind": "Pod"}, status=status[0])

    app = web.Application()
    app.router.add_patch("/api/v1/namespaces/{ns}/pods/{name}", patch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, seen


def _sa_dir(tmp_path: Path, namespace: str = "dragoman") -> Path:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("token-1\n")
    (sa / "namespace").write_text(namespace)
    return sa


def test_pod_deletion_cost_is_a_no_op_outside_kubernetes(tmp_path: Path) -> None:
    from dragoman.config import Settings
    from dragoman.worker.k8s_cost import in_cluster

    sa = _sa_dir(tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    named = Settings(pod_name="dragoman-worker-abc")
    assert in_cluster(Settings(), env, sa) is None  # no pod name (not set by the manifest)
    assert in_cluster(named, {}, sa) is None  # not in a cluster
    assert in_cluster(named, env, tmp_path / "none") is None  # no token mounted
    assert in_cluster(Settings(pod_name="x", pod_deletion_cost=False), env, sa) is None
    pod = in_cluster(named, env, sa)
    assert pod is not None
    assert pod.url == "https://10.0.0.1:443/api/v1/namespaces/dragoman/pods/dragoman-worker-abc"
    ipv6 = in_cluster(named, {**env, "KUBERNETES_SERVICE_HOST": "fd00::1"}, sa)
    assert ipv6 is not None and ipv6.api_url == "https://[fd00::1]:443"


async def test_pod_deletion_cost_follows_calls_against_a_fake_api_server(tmp_path: Path) -> None:
    from dragoman.worker.k8s_cost import ANNOTATION, DeletionCost, PodRef

    status = [200]
    runner, seen = await _fake_api_server(status)
    port = runner.addresses[0][1]
    sa = _sa_dir(tmp_path)
    pod = PodRef(f"http://127.0.0.1:{port}", "dragoman", "w-1", sa / "token", None)
    clock = _Clock()
    cost = DeletionCost(pod, interval_s=10.0, clock=clock)
    try:
        assert await cost.update(0)  # the first value is written at once
        assert seen[-1] == {
            "path": "/api/v1/namespaces/dragoman/pods/w-1",
            "auth": "Bearer token-1",
            "type": "application/merge-patch+json",
            "body": {"metadata": {"annotations": {ANNOTATION: "0"}}},
        }
        assert await cost.update(1)  # no longer empty: at once
        assert len(seen) == 2 and seen[-1]["body"]["metadata"]["annotations"][ANNOTATION] == "1"
        assert not await cost.update(5)  # a busy pod's count: at most every 10 s
        assert len(seen) == 2
        clock.t += 10
        (sa / "token").write_text("token-2")  # the kubelet rotated the token
        assert await cost.update(5)
        assert seen[-1]["auth"] == "Bearer token-2"
        assert await cost.update(5) and len(seen) == 3  # unchanged: nothing sent
        assert await cost.update(0)  # empty again: at once
        assert seen[-1]["body"]["metadata"]["annotations"][ANNOTATION] == "0"

        status[0] = 403  # e.g. the admission policy refused it
        assert not await cost.update(2)
        assert cost.failures == 1 and cost.written == 0
        status[0] = 200
        assert not await cost.update(2)  # a failed write is retried, but not at once
        clock.t += 5
        assert await cost.update(2) and cost.failures == 0 and cost.written == 2
    finally:
        await cost.stop()
        await runner.cleanup()


async def test_pod_deletion_cost_poller_runs_in_the_background(tmp_path: Path) -> None:
    from dragoman.worker.k8s_cost import ANNOTATION, DeletionCost, PodRef

    runner, seen = await _fake_api_server([200])
    port = runner.addresses[0][1]
    pod = PodRef(f"http://127.0.0.1:{port}", "ns", "w", _sa_dir(tmp_path) / "token", None)
    calls = [3]
    cost = DeletionCost(pod, interval_s=0.0)
    try:
        cost.start(lambda: calls[0])
        for _ in range(100):
            await asyncio.sleep(0.05)
            if cost.written == 3:
                break
        calls[0] = 0
        for _ in range(100):
            await asyncio.sleep(0.05)
            if cost.written == 0:
                break
        values = [s["body"]["metadata"]["annotations"][ANNOTATION] for s in seen]
        assert values == ["3", "0"]
    finally:
        await cost.stop()
        await runner.cleanup()
    idle = DeletionCost(None, 10.0)  # outside Kubernetes: start and update do nothing
    idle.start(lambda: 1)
    assert not idle.enabled and not await idle.update(1)
    await idle.stop()
