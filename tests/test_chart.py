"""The Helm chart (helm/iochost): lint, render, validate, and check what an operator relies on.

No cluster and no helm binary: helm-python-sdk binds Helm's Go SDK (libhelm_c), so
``Chart.render`` is ``helm template`` and ``lint`` is ``helm lint``, offline, values schema
included. Every rendered object is validated by kubernetes-validate in strict mode against
the Kubernetes KUBE_VERSION schemas it ships. The ServiceMonitor is a Prometheus Operator
CRD kubernetes-validate has no schema for: its essential fields are checked here instead
(check_service_monitor). The daemon's own argument parser and Settings read the container's
args, so the chart cannot pass a flag or a value the daemon would refuse or read otherwise.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed: pip install -e '.[test]'")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed: pip install -e '.[test]'")

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "iochost"
KUBE_VERSION = "1.30.0"
RELEASE, NAMESPACE = "beamline", "controls"
FULLNAME = "beamline-iochost"
SECRET = "iochost-tokens"
TOKEN_DIR = "/run/secrets/iochost"

BASE: dict[str, Any] = {"tokenSecret": SECRET}
SERVICE_MODE: dict[str, Any] = {
    "hostNetwork": False,
    "epicsService": {"type": "LoadBalancer", "loadBalancerIP": "192.0.2.10",
                     "annotations": {"metallb.universe.tf/allow-shared-ip": "iochost"}},
}
METRICS: dict[str, Any] = {
    "metrics": {"enabled": True, "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "networkPolicy": {"enabled": True, "epicsCIDRs": ["198.51.100.0/24"],
                      "apiFrom": [{"podSelector": {}},
                                  {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
}
EXAMPLES: dict[str, Any] = {
    "loadExamples": True,
    "allowedSources": ["https://github.com/my-org/", "https://gitlab.example.org/controls/"],
}
PLUGINS_DIR = "/etc/iochost"
PLUGINS_FILE = f"{PLUGINS_DIR}/plugins.yaml"
PLUGIN_SECRETS_DIR = "/run/secrets/plugins"
PLUGIN_SECRET = "gitlab-token"
PUBLIC_PLUGIN: dict[str, Any] = {
    "name": "motor-sim",
    "git_url": "https://github.com/my-org/iochost-motor-sim.git",
    "commit": "0123456789abcdef0123456789abcdef01234567",
    "path": "plugins/motor",
    # Strings YAML 1.1 would read as something else must come back as strings.
    "parameters": {"axes": 4, "poll_interval": 0.5, "mode": "on", "umask": "0755", "unit": "null",
                   "names": ["X", "Y"], "limits": {"low": -10, "high": 1000}},
    "auto_start": False,
}
PRIVATE_PLUGIN: dict[str, Any] = {
    "name": "vacuum",
    "git_url": "https://gitlab.example.org/controls/vacuum-plugin.git",
    "branch": "main",
    "class_name": "VacuumPlugin",
    "pat_file": f"{PLUGIN_SECRETS_DIR}/{PLUGIN_SECRET}/token",
    "grace_period": 20,
}
PLUGINS: dict[str, Any] = {"plugins": [PUBLIC_PLUGIN, PRIVATE_PLUGIN], "pluginSecrets": [PLUGIN_SECRET]}
ACF_DIR = "/etc/iochost-access-security"
ACF = """\
UAG(operators) { alice, bob }
HAG(consoles) { 10.0.5.21 }
ASG(DEFAULT) { RULE(1, READ) }
ASG(IOCHOST_INPUTS) { RULE(1, READ) RULE(1, WRITE) { UAG(operators) HAG(consoles) } }
ASG(IOCHOST_CONTROL) { RULE(1, READ) RULE(1, WRITE) { UAG(operators) HAG(consoles) } }
"""
CONTROL: dict[str, Any] = {"epics": {"control": True, "tableRows": 40, "accessSecurity": ACF,
                                     "allowSharedCaPort": True}}
BEAMLINE: dict[str, Any] = {"beamline": "sparc", "epicsConfiguration": {"iocs": [
    {"name": "diag", "devgroup": "io", "devtype": "ai", "iocprefix": "SPARC:DIAG", "iocroot": "IO",
     "devices": [{"name": "TEMP1"}]}]}}
BEAMLINE_DIR = "/etc/iochost-beamline"
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "service-mode": SERVICE_MODE,
    "persistence-off": {"persistence": {"enabled": False}},
    "beamline": {"beamlineConfig": BEAMLINE},
    "metrics": METRICS,
    "metrics-service-mode": {**METRICS, **SERVICE_MODE},
    "examples": EXAMPLES,
    "plugins": PLUGINS,
    "epics-control": CONTROL,
}


def merge(base: dict[str, Any], *overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep merge, as helm merges -f files and --set: later wins, maps merge, lists replace."""
    out = copy.deepcopy(base)
    for override in overrides:
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


class Render:
    """One `helm template` run: the objects by kind and name, and NOTES.txt."""

    def __init__(self, values: dict[str, Any], set_string: tuple[str, ...] = ()) -> None:
        for expression in set_string:  # `--set-string a.b=c`: the value stays a string
            values = merge(values, helm.parse_set_string_values(expression))
        with helm.Chart.load(CHART) as chart:
            manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
        self.notes = manifests.pop("iochost/templates/NOTES.txt", "")
        self.objects = [obj for text in manifests.values() for obj in yaml.safe_load_all(text) if obj]

    def get(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.objects
                 if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
        assert len(found) == 1, f"{len(found)} {kind} {name or ''} rendered"
        return found[0]

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)

    @property
    def pod(self) -> dict[str, Any]:
        return self.get("StatefulSet")["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod["containers"]
        return container

    def flag(self, name: str) -> list[str]:
        """Values of `--name=value` in the daemon's args, in order."""
        prefix = f"--{name}="
        return [a[len(prefix):] for a in self.container["args"] if a.startswith(prefix)]


def render(*overrides: dict[str, Any], set_string: tuple[str, ...] = ()) -> Render:
    return Render(merge(BASE, *overrides), set_string)


def refusal(*overrides: dict[str, Any], base: dict[str, Any] = BASE, set_string: tuple[str, ...] = ()) -> str:
    with pytest.raises(helm.HelmError) as caught:
        Render(merge(base, *overrides), set_string)
    return str(caught.value)


# Keys the Prometheus Operator's ServiceMonitor CRD (monitoring.coreos.com/v1) defines at
# the places the chart uses; a typo in any of them would be dropped silently by the API.
SERVICE_MONITOR_SPEC_KEYS = {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels"}
SERVICE_MONITOR_ENDPOINT_KEYS = {"port", "path", "scheme", "interval", "scrapeTimeout", "authorization",
                                 "honorLabels", "relabelings", "metricRelabelings", "tlsConfig"}


def check_service_monitor(monitor: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    """The fields Prometheus needs to scrape /metrics with the read token, and that the
    selector and port name match the rendered API Service."""
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) <= {"apiVersion", "kind", "metadata", "spec"}
    spec = monitor["spec"]
    assert set(spec) <= SERVICE_MONITOR_SPEC_KEYS
    selector = spec["selector"]["matchLabels"]
    services = [o for o in objects if o["kind"] == "Service"
                and selector.items() <= o["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in services] == [FULLNAME], "selects exactly the API Service"
    (endpoint,) = spec["endpoints"]
    assert set(endpoint) <= SERVICE_MONITOR_ENDPOINT_KEYS
    assert endpoint["port"] in {p["name"] for p in services[0]["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": SECRET, "key": "read-token"}}
    for key in ("interval", "scrapeTimeout"):
        assert endpoint[key][-1] in "smh" and endpoint[key][:-1].isdigit(), endpoint[key]


def validate(result: Render) -> None:
    for obj in result.objects:
        if obj["kind"] == "ServiceMonitor":
            check_service_monitor(obj, result.objects)
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")


# -- lint and schema-valid renders -----------------------------------------------------------

@pytest.mark.parametrize("scenario", ["default", "service-mode", "metrics-service-mode", "plugins"])
def test_helm_lint_strict(scenario: str) -> None:
    report = helm.lint(CHART, merge(BASE, SCENARIOS[scenario]), strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert problems == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_rendered_object_is_valid(scenario: str) -> None:
    result = render(SCENARIOS[scenario])
    expected = ["Pod", "Service", "StatefulSet"]  # the helm test pod, the API Service
    if scenario in ("service-mode", "metrics-service-mode"):
        expected.append("Service")
    if scenario.startswith("metrics"):
        expected += ["NetworkPolicy", "ServiceMonitor"]
    if scenario in ("plugins", "epics-control", "beamline"):  # the plugins, access security, beamline file
        expected.append("ConfigMap")
    assert result.kinds() == sorted(expected)
    validate(result)


def test_kubernetes_validate_ships_the_version_checked_against() -> None:
    from kubernetes_validate.utils import all_versions

    assert KUBE_VERSION in all_versions(), f"kubernetes-validate no longer ships {KUBE_VERSION}'s schemas"


def test_validation_catches_a_wrong_object() -> None:
    """The validator this file relies on refuses what the API server would."""
    result = render()
    statefulset = result.get("StatefulSet")
    statefulset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = "10001"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBE_VERSION, strict=True)
    statefulset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = 10001
    statefulset["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBE_VERSION, strict=True)


# -- the two network modes -----------------------------------------------------------------

def ports_of(entries: list[dict[str, Any]], key: str = "port") -> set[tuple[str, int]]:
    return {(e.get("protocol", "TCP"), int(e[key])) for e in entries}


def test_host_network_mode_is_the_default() -> None:
    result = render()
    assert result.pod["hostNetwork"] is True
    assert result.pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert result.flag("epics-host") == ["0.0.0.0"] and result.flag("host") == ["0.0.0.0"]
    # No EPICS Service: the node's address is the endpoint.
    assert [s["metadata"]["name"] for s in result.objects if s["kind"] == "Service"] == [FULLNAME]
    # Every port is declared, so the scheduler keeps a second release off the node.
    declared = ports_of(result.container["ports"], "containerPort")
    assert declared == ({("TCP", 8080), ("UDP", 5064), ("UDP", 5076)}
                        | {("TCP", p) for p in range(5100, 5200)} | {("TCP", p) for p in range(5300, 5400)})
    assert "one release per node" in result.notes
    assert "EPICS_CA_ADDR_LIST=$NODE" in result.notes


@pytest.mark.parametrize("ranges", [("5100-5199", "5300-5399"), ("6000-6009", "6100-6104")])
def test_service_mode_exposes_every_rendered_port_on_one_service(ranges: tuple[str, str]) -> None:
    ca_range, pva_range = ranges
    result = render(SERVICE_MODE, {"epics": {"workerPorts": ca_range, "workerPvaPorts": pva_range}})
    assert result.pod.get("hostNetwork", False) is False
    assert result.pod.get("dnsPolicy", "ClusterFirst") == "ClusterFirst"
    service = result.get("Service", f"{FULLNAME}-epics")
    spec = service["spec"]
    assert spec["type"] == "LoadBalancer" and spec["loadBalancerIP"] == "192.0.2.10"
    assert service["metadata"]["annotations"] == {"metallb.universe.tf/allow-shared-ip": "iochost"}
    assert spec["publishNotReadyAddresses"] is True  # restored plugins serve during the restore

    def span(text: str) -> range:
        low, high = (int(x) for x in text.split("-"))
        return range(low, high + 1)

    expected = ({("UDP", 5064), ("UDP", 5076)} | {("TCP", p) for p in span(ca_range)}
                | {("TCP", p) for p in span(pva_range)})
    assert ports_of(spec["ports"]) == expected
    assert len(spec["ports"]) == len(expected)
    assert all(p["targetPort"] == p["port"] for p in spec["ports"])  # the number the daemon hands out
    assert len({p["name"] for p in spec["ports"]}) == len(spec["ports"])
    # The same values reach the daemon: it can only hand out ports the Service carries.
    assert result.flag("worker-ports") == [ca_range]
    assert result.flag("worker-pva-ports") == [pva_range]
    assert result.flag("ca-port") == ["5064"] and result.flag("pva-port") == ["5076"]
    assert result.flag("epics-host") == ["0.0.0.0"]
    assert ports_of(result.container["ports"], "containerPort") == expected | {("TCP", 8080)}
    assert f"{FULLNAME}-epics" in result.notes and "EPICS_CA_AUTO_ADDR_LIST=NO" in result.notes


def test_service_mode_cluster_ip_by_default_and_node_port_pins_node_ports() -> None:
    assert render({"hostNetwork": False}).get("Service", f"{FULLNAME}-epics")["spec"]["type"] == "ClusterIP"
    node_port = {"hostNetwork": False, "epicsService": {"type": "NodePort"},
                 "epics": {"caPort": 30064, "pvaPort": 30076,
                           "workerPorts": "30100-30119", "workerPvaPorts": "30300-30319"}}
    result = render(node_port)
    validate(result)
    ports = result.get("Service", f"{FULLNAME}-epics")["spec"]["ports"]
    assert len(ports) == 42 and all(p["nodePort"] == p["port"] == p["targetPort"] for p in ports)
    assert "EPICS_CA_ADDR_LIST=$ADDR:30064" in result.notes
    message = refusal({"hostNetwork": False, "epicsService": {"type": "NodePort"}})
    assert "epicsService.nodePortRange" in message and "epics.caPort" in message


# -- the daemon reads the chart's args as the chart means them -------------------------------

@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_daemon_accepts_the_container_args(scenario: str, tmp_path: Path) -> None:
    from iochost.cli import build_parser
    from iochost.settings import Settings

    if SCENARIOS[scenario].get("plugins") and "plugins_file" not in Settings.model_fields:
        pytest.skip("iochost.settings.Settings has no plugins_file yet: the daemon's --plugins-file is "
                    "being added; this parser check runs once it is there")
    result = render(SCENARIOS[scenario])
    for name in ("admin-token", "read-token"):
        (tmp_path / name).write_text(f"{name}-value\n")
    (tmp_path / "iochost.acf").write_text(ACF)
    (tmp_path / "beamline.yaml").write_text(yaml.safe_dump(BEAMLINE))
    args = [a.replace(TOKEN_DIR, str(tmp_path)).replace(ACF_DIR, str(tmp_path)).replace(BEAMLINE_DIR, str(tmp_path))
            for a in result.container["args"]]
    environ = {e["name"]: e["value"] for e in result.container.get("env", [])}
    assert not [k for k in environ if k.startswith("IOCHOST_")], "settings come as flags, one source"
    namespace = build_parser().parse_args(["serve", *args])
    settings = Settings.from_sources(vars(namespace), environ=environ)
    with helm.Chart.load(CHART) as chart:
        values = merge(chart.values, BASE, SCENARIOS[scenario])
    assert settings.host == "0.0.0.0" and settings.epics_host == "0.0.0.0"
    assert settings.port == values["api"]["port"]
    assert str(settings.data_dir) == "/data"
    assert settings.ca_port == values["epics"]["caPort"] and settings.pva_port == values["epics"]["pvaPort"]
    assert settings.worker_ports == values["epics"]["workerPorts"]
    assert settings.worker_pva_ports == values["epics"]["workerPvaPorts"]
    assert settings.admin_token.get_secret_value() == "admin-token-value"
    assert settings.read_token.get_secret_value() == "read-token-value"
    assert settings.allow_source == values["allowedSources"]
    expected_examples = Path("/opt/iochost/plugins-example") if values["loadExamples"] else None
    assert settings.examples == expected_examples
    assert settings.prefix == values["prefix"] and settings.log_format == values["logFormat"]
    if "plugins_file" in Settings.model_fields:
        assert settings.plugins_file == (Path(PLUGINS_FILE) if values["plugins"] else None)
    assert settings.epics_control == values["epics"]["control"]
    assert settings.allow_shared_ca_port == values["epics"]["allowSharedCaPort"]
    assert settings.epics_table_rows == values["epics"]["tableRows"]
    assert settings.epics_access_security == (tmp_path / "iochost.acf" if values["epics"]["accessSecurity"] else None)
    assert settings.beamline_values == values["beamlineConfig"]


# -- the beamline configuration ------------------------------------------------------------------


def test_the_beamline_config_reaches_the_daemon(tmp_path: Path) -> None:
    from iochost.cli import build_parser
    from iochost.settings import Settings

    result = render({"beamlineConfig": BEAMLINE})
    config_map = result.get("ConfigMap", f"{FULLNAME}-beamline")
    assert yaml.safe_load(config_map["data"]["beamline.yaml"]) == BEAMLINE
    [flag] = result.flag("beamline-config")
    (mount,) = [m for m in result.container["volumeMounts"] if m["mountPath"] == BEAMLINE_DIR]
    assert flag == f"{BEAMLINE_DIR}/beamline.yaml"
    (volume,) = [v for v in result.pod["volumes"] if v["name"] == mount["name"]]
    assert mount["readOnly"] and volume["configMap"]["name"] == config_map["metadata"]["name"]
    # the daemon reads the file the flag names: the plugins' beamline_config is the map
    (tmp_path / "beamline.yaml").write_text(config_map["data"]["beamline.yaml"])
    args = [a.replace(mount["mountPath"], str(tmp_path)) for a in result.container["args"]]
    for name in ("admin-token", "read-token"):
        (tmp_path / name).write_text(f"{name}-value\n")
    args = [a.replace(TOKEN_DIR, str(tmp_path)) for a in args]
    settings = Settings.from_sources(vars(build_parser().parse_args(["serve", *args])), environ={})
    assert settings.beamline_config == tmp_path / "beamline.yaml" and settings.beamline_values == BEAMLINE
    # a changed file rolls the pod; none: no flag, no ConfigMap, no annotation
    annotations = result.get("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    changed = render({"beamlineConfig": {**BEAMLINE, "beamline": "other"}})
    assert (changed.get("StatefulSet")["spec"]["template"]["metadata"]["annotations"]["checksum/beamline"]
            != annotations["checksum/beamline"])
    plain = render()
    assert not plain.flag("beamline-config")
    assert not [o for o in plain.objects if o["metadata"]["name"].endswith("-beamline")]
    with pytest.raises(helm.HelmError, match="beamlineConfig"):
        render({"extraEnv": [{"name": "IOCMNG_BEAMLINE_CONFIG", "value": "/x.yaml"}]})


# -- control from Phoebus and access security -------------------------------------------------

def test_control_pvs_and_the_access_security_file() -> None:
    result = render(CONTROL)
    acf_map = result.get("ConfigMap", f"{FULLNAME}-access-security")
    assert acf_map["data"] == {"iochost.acf": ACF}
    assert result.flag("epics-access-security") == [f"{ACF_DIR}/iochost.acf"] and "--epics-control" in result.container["args"]
    (mount,) = [m for m in result.container["volumeMounts"] if m["mountPath"] == ACF_DIR]
    (volume,) = [v for v in result.pod["volumes"] if v["name"] == mount["name"]]
    assert mount["readOnly"] and volume["configMap"]["name"] == acf_map["metadata"]["name"]
    annotations = result.get("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    changed = render(merge(CONTROL, {"epics": {"accessSecurity": ACF + "ASG(SPARE) { RULE(1, READ) }\n"}}))
    changed_annotations = changed.get("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert changed_annotations["checksum/access-security"] != annotations["checksum/access-security"]
    assert "WARNING: epics.control" not in result.notes

    plain = render()
    assert "--epics-control" not in plain.container["args"] and not plain.flag("epics-access-security")
    assert not [o for o in plain.objects if o["metadata"]["name"].endswith("-access-security")]
    unprotected = render({"epics": {"control": True}})
    assert "WARNING: epics.control is on without epics.accessSecurity" in unprotected.notes


def test_the_documented_acf_is_one_epics_accepts(tmp_path: Path) -> None:
    """The example in values.yaml, uncommented, parses with EPICS's own parser."""
    from iochost.worker.access_security import check_file

    lines = (CHART / "values.yaml").read_text().splitlines()
    start = lines.index("  #   accessSecurity: |") + 1
    example = [line.removeprefix("  #     ") for line in lines[start:] if line.startswith("  #     ")]
    assert len(example) == 5
    (tmp_path / "example.acf").write_text("\n".join(example) + "\n")
    assert check_file(tmp_path / "example.acf") is None
    (tmp_path / "chart.acf").write_text(ACF)
    assert check_file(tmp_path / "chart.acf") is None


# -- tokens ----------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", SCENARIOS)
def test_tokens_are_files_from_the_secret_never_env(scenario: str) -> None:
    result = render(SCENARIOS[scenario])
    (token_mount,) = [m for m in result.container["volumeMounts"] if m["mountPath"] == TOKEN_DIR]
    (volume,) = [v for v in result.pod["volumes"] if v["name"] == token_mount["name"]]
    # Any other Secret volume is a plugin Secret the values listed.
    others = [v["secret"]["secretName"] for v in result.pod["volumes"] if "secret" in v and v is not volume]
    assert others == SCENARIOS[scenario].get("pluginSecrets", [])
    assert volume["secret"]["secretName"] == SECRET
    assert volume["secret"]["defaultMode"] == 0o440
    files = {item["path"]: item["key"] for item in volume["secret"]["items"]}
    assert files == {"admin-token": "admin-token", "read-token": "read-token"}
    (mount,) = [m for m in result.container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["mountPath"] == TOKEN_DIR and mount["readOnly"] is True
    assert result.flag("admin-token-file") == [f"{TOKEN_DIR}/admin-token"]
    assert result.flag("read-token-file") == [f"{TOKEN_DIR}/read-token"]
    pods = [result.pod] + [o["spec"] for o in result.objects if o["kind"] == "Pod"]
    for container in (c for pod in pods for c in pod["containers"]):
        for env in container.get("env", []):
            assert "TOKEN" not in env["name"].upper(), env
            assert "secretKeyRef" not in env.get("valueFrom", {}), env
        assert "envFrom" not in container
        assert not [a for a in container.get("args", []) if "token=" in a.lower()]


def test_a_missing_token_secret_is_refused() -> None:
    assert "tokenSecret is required" in refusal(base={})
    assert "tokenSecret is required" in refusal({"tokenSecret": ""}, base={})


# -- security context and probes -------------------------------------------------------------

POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                      "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                      "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.mark.parametrize("scenario", ["default", "service-mode"])
def test_pods_run_restricted(scenario: str) -> None:
    result = render(SCENARIOS[scenario])
    test_pod = result.get("Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    for pod in (result.pod, test_pod["spec"]):
        assert POD_SECURITY.items() <= pod["securityContext"].items()
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            assert CONTAINER_SECURITY.items() <= container["securityContext"].items()
    # A read-only root: /tmp is an emptyDir and HOME lies in it.
    volumes = {v["name"]: v for v in result.pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in result.container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    home = {e["name"]: e.get("value") for e in result.container["env"]}["HOME"]
    assert home == "/tmp" or home.startswith("/tmp/")
    assert mounts["/data"] == "data"


def test_probes() -> None:
    container = render().container
    assert container["startupProbe"]["httpGet"]["path"] == "/api/v1/health/live"
    assert container["livenessProbe"]["httpGet"]["path"] == "/api/v1/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/v1/health/ready"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # a long start is not killed
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    longer = render({"probes": {"startup": {"periodSeconds": 15, "failureThreshold": 80}}}).container
    assert (longer["startupProbe"]["periodSeconds"], longer["startupProbe"]["failureThreshold"]) == (15, 80)


def test_helm_test_pod_checks_health_through_the_api_service() -> None:
    result = render()
    (container,) = result.get("Pod")["spec"]["containers"]
    assert container["command"][:2] == ["python", "-c"]  # python:slim has no curl
    script = container["command"][2]
    compile(script, "helm-test", "exec")
    assert f"http://{FULLNAME}.{NAMESPACE}.svc:8080/api/v1/health" in script
    assert container["image"] == result.container["image"]


# -- persistence, metrics, network policy, examples ------------------------------------------

def test_persistence() -> None:
    kept = render().get("StatefulSet")["spec"]
    (claim,) = kept["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert "data" not in {v["name"] for v in kept["template"]["spec"]["volumes"]}
    assert kept["replicas"] == 1
    lost = render({"persistence": {"enabled": False}})
    assert "volumeClaimTemplates" not in lost.get("StatefulSet")["spec"]
    assert {"name": "data", "emptyDir": {}} in lost.pod["volumes"]
    assert "every plugin is lost" in lost.notes


def test_metrics_service_monitor_and_network_policy() -> None:
    result = render(METRICS)
    annotations = result.get("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "8080",
                           "prometheus.io/path": "/metrics"}
    check_service_monitor(result.get("ServiceMonitor"), result.objects)
    assert result.get("ServiceMonitor")["metadata"]["labels"]["release"] == "prometheus"
    policy = result.get("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["podSelector"]["matchLabels"].items() <= result.get("StatefulSet")["spec"]["template"][
        "metadata"]["labels"].items()
    api_rule, epics_rule = policy["ingress"]
    assert api_rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert api_rule["from"] == METRICS["networkPolicy"]["apiFrom"]
    assert epics_rule["ports"] == [{"port": 5064, "protocol": "UDP"}, {"port": 5076, "protocol": "UDP"},
                                   {"port": 5100, "endPort": 5199, "protocol": "TCP"},
                                   {"port": 5300, "endPort": 5399, "protocol": "TCP"}]
    assert epics_rule["from"] == [{"ipBlock": {"cidr": "198.51.100.0/24"}}]
    assert "not enforced for host-network pods" in result.notes
    off = render()
    assert "annotations" not in off.get("StatefulSet")["spec"]["template"]["metadata"]
    assert "NetworkPolicy" not in off.kinds() and "ServiceMonitor" not in off.kinds()


def test_examples_and_allowed_sources() -> None:
    result = render(EXAMPLES)
    assert result.flag("examples") == ["/opt/iochost/plugins-example"]
    assert result.flag("allow-source") == EXAMPLES["allowedSources"]
    plain = render()
    assert plain.flag("examples") == [] and plain.flag("allow-source") == []


# -- declared plugins (--plugins-file) -------------------------------------------------------

def plugins_config_map(result: Render) -> dict[str, Any]:
    return result.get("ConfigMap", f"{FULLNAME}-plugins")


def pod_annotations(result: Render) -> dict[str, str]:
    return result.get("StatefulSet")["spec"]["template"]["metadata"].get("annotations", {})


def test_a_plugins_list() -> None:
    result = render(PLUGINS)
    validate(result)
    # The ConfigMap holds exactly the list given, as the daemon's file: `plugins:` + the list.
    config_map = plugins_config_map(result)
    assert set(config_map["data"]) == {"plugins.yaml"}
    assert yaml.safe_load(config_map["data"]["plugins.yaml"]) == {"plugins": PLUGINS["plugins"]}
    # The daemon is pointed at the file where the ConfigMap is mounted, read-only, as a
    # directory (a subPath mount would not follow the ConfigMap).
    assert result.flag("plugins-file") == [PLUGINS_FILE]
    volumes = {v["name"]: v for v in result.pod["volumes"]}
    mounts = {m["mountPath"]: m for m in result.container["volumeMounts"]}
    plugins_mount = mounts[PLUGINS_DIR]
    assert plugins_mount["readOnly"] is True and "subPath" not in plugins_mount
    plugins_volume = volumes[plugins_mount["name"]]
    assert plugins_volume["configMap"]["name"] == f"{FULLNAME}-plugins"
    (item,) = plugins_volume["configMap"]["items"]
    assert item["key"] == "plugins.yaml"
    assert result.flag("plugins-file") == [f"{plugins_mount['mountPath']}/{item['path']}"]
    # The private entry's pat_file is a key of the mounted plugin Secret.
    secret_dir = f"{PLUGIN_SECRETS_DIR}/{PLUGIN_SECRET}"
    secret_mount = mounts[secret_dir]
    assert secret_mount["readOnly"] is True and "subPath" not in secret_mount
    secret_volume = volumes[secret_mount["name"]]["secret"]
    assert secret_volume["secretName"] == PLUGIN_SECRET and secret_volume["defaultMode"] == 0o440
    assert "items" not in secret_volume  # every key a file
    assert PRIVATE_PLUGIN["pat_file"].startswith(secret_dir + "/")
    assert result.pod["securityContext"]["fsGroup"] == 10001  # the group that can read 0440
    # No token inline anywhere: not in the file, the args or the environment.
    assert "pat:" not in config_map["data"]["plugins.yaml"]
    assert "Declared plugins: 2" in result.notes


def test_the_plugins_checksum_rolls_the_pod_only_when_the_list_changes() -> None:
    checksum = pod_annotations(render(PLUGINS))["checksum/plugins"]
    assert len(checksum) == 64 and int(checksum, 16) >= 0
    assert pod_annotations(render(PLUGINS))["checksum/plugins"] == checksum  # stable
    # The same list with another plugin Secret mounted: the file, hence the sum, is the same.
    more_secrets = merge(PLUGINS, {"pluginSecrets": [PLUGIN_SECRET, "github-token"]})
    assert pod_annotations(render(more_secrets))["checksum/plugins"] == checksum
    changed = copy.deepcopy(PLUGINS)
    changed["plugins"][0]["parameters"]["axes"] = 6
    assert pod_annotations(render(changed))["checksum/plugins"] != checksum
    fewer = {"plugins": [PUBLIC_PLUGIN], "pluginSecrets": []}
    assert pod_annotations(render(fewer))["checksum/plugins"] != checksum
    # No list: no ConfigMap, no flag, no annotation, no volume.
    none = render()
    assert "ConfigMap" not in none.kinds() and none.flag("plugins-file") == []
    assert "checksum/plugins" not in pod_annotations(none)
    assert PLUGINS_DIR not in {m["mountPath"] for m in none.container["volumeMounts"]}


def test_the_checksum_is_the_sha256_of_the_config_map_data() -> None:
    import hashlib

    result = render(PLUGINS)
    data = plugins_config_map(result)["data"]["plugins.yaml"]
    # The block scalar adds the final newline the rendered text lacks.
    assert hashlib.sha256(data.rstrip("\n").encode()).hexdigest() == pod_annotations(result)["checksum/plugins"]


def test_a_local_path_inside_the_image_is_allowed() -> None:
    local = {"name": "beam-shutter", "local_path": "/opt/iochost/plugins-example/beam-shutter"}
    result = render({"plugins": [local], "extraArgs": ["--allow-local-sources"]})
    validate(result)
    assert yaml.safe_load(plugins_config_map(result)["data"]["plugins.yaml"]) == {"plugins": [local]}
    assert (REPO / "plugins-example" / "beam-shutter").is_dir()  # what the image copies there


def test_the_daemon_reads_the_rendered_plugins_file(tmp_path: Path) -> None:
    """The rendered file, with the Secret's directory moved under tmp_path, through the
    daemon's own loader: every entry is accepted and the token comes from pat_file."""
    plugins_file = pytest.importorskip(
        "iochost.plugins_file", reason="iochost.plugins_file is being added with --plugins-file")
    text = plugins_config_map(render(PLUGINS))["data"]["plugins.yaml"]
    secrets = tmp_path / "secrets"
    (secrets / PLUGIN_SECRET).mkdir(parents=True)
    (secrets / PLUGIN_SECRET / "token").write_text("glpat-example\n")
    path = tmp_path / "plugins.yaml"
    path.write_text(text.replace(PLUGIN_SECRETS_DIR, str(secrets)))
    loaded = plugins_file.load_plugins_file(path)
    assert loaded.problems == [] and loaded.warnings == []
    requests = {r.name: r for r in loaded.requests}
    assert list(requests) == ["motor-sim", "vacuum"]
    assert requests["vacuum"].pat == "glpat-example"
    assert requests["motor-sim"].pat is None
    assert requests["motor-sim"].source.commit == PUBLIC_PLUGIN["commit"]
    assert requests["motor-sim"].parameters == PUBLIC_PLUGIN["parameters"]


def with_private(**changes: Any) -> dict[str, Any]:
    """PLUGINS with the private entry changed; a value None removes the field."""
    values = copy.deepcopy(PLUGINS)
    entry = values["plugins"][1]
    for key, value in changes.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    return values


@pytest.mark.parametrize("values, names", [
    (with_private(pat="glpat-inline"), ["/plugins/1", "'pat'"]),
    (with_private(pat="glpat-inline", pat_file=None), ["/plugins/1", "'pat'"]),
    (with_private(name="motor-sim"), ["plugins[1] (motor-sim)", "declared twice"]),
    (with_private(pat_file="/tmp/token"), ["plugins[1] (vacuum)", "pat_file", "pluginSecrets"]),
    (with_private(pat_file="/run/secrets/plugins/other-token/token"), ["plugins[1] (vacuum)", "pat_file"]),
    (with_private(pat_file=f"/run/secrets/plugins/{PLUGIN_SECRET}/../iochost/admin-token"),
     ["plugins[1] (vacuum)", "pat_file"]),
    ({**with_private(), "pluginSecrets": []}, ["plugins[1] (vacuum)", "pat_file"]),
    (with_private(commit="abc123"), ["/plugins/1/commit"]),
    (with_private(commit="0123456789abcdef0123456789abcdef0123456g"), ["/plugins/1/commit"]),
    (with_private(git_url=None), ["/plugins/1", "oneOf"]),
    (with_private(local_path="/opt/iochost/plugins-example/beam-shutter"), ["/plugins/1", "oneOf"]),
    (with_private(git_url="https://oauth2:glpat-x@gitlab.example.org/controls/vacuum.git"),
     ["plugins[1] (vacuum)", "git_url carries credentials"]),
    (with_private(name="Vacuum.2"), ["/plugins/1/name"]),
    (with_private(grace_period=0), ["/plugins/1/grace_period"]),
    (with_private(grace_period=601), ["/plugins/1/grace_period"]),
    (with_private(auto_start="yes"), ["/plugins/1/auto_start"]),
    (with_private(parameters=["axes=4"]), ["/plugins/1/parameters"]),
    ({**PLUGINS, "pluginSecrets": ["Not_A_Secret"]}, ["/pluginSecrets/0"]),
], ids=["inline-pat", "inline-pat-only", "duplicate-name", "pat-file-elsewhere", "pat-file-unmounted-secret",
        "pat-file-escapes", "no-plugin-secrets", "six-digit-commit", "non-hex-commit", "no-source", "two-sources",
        "credentials-in-url", "bad-name", "grace-zero", "grace-too-long", "auto-start-string",
        "parameters-list", "bad-secret-name"])
def test_wrong_plugins_are_refused_naming_the_entry_and_field(values: dict[str, Any], names: list[str]) -> None:
    message = refusal(values)
    for name in names:
        assert name in message, message


def test_the_schema_checks_names_and_commits_as_the_daemon_does() -> None:
    """The values schema repeats two of the daemon's patterns (JSON cannot import them): they must stay equal."""
    import json

    from iochost.config.pvnames import PLUGIN_NAME_PATTERN
    from iochost.store.models import COMMIT_PATTERN

    entry = json.loads((CHART / "values.schema.json").read_text())["definitions"]["plugin"]["properties"]
    assert entry["name"]["pattern"] == PLUGIN_NAME_PATTERN
    assert entry["commit"]["pattern"] == COMMIT_PATTERN


def test_extra_args_and_env_pass_through() -> None:
    result = render({"extraArgs": ["--worker-pool=4"], "extraEnv": [{"name": "TZ", "value": "Europe/Rome"}]})
    assert result.container["args"][-1] == "--worker-pool=4"
    assert {"name": "TZ", "value": "Europe/Rome"} in result.container["env"]


def test_one_replica_is_stated() -> None:
    result = render()
    assert "ONE replica" in result.notes
    assert "one replica" in (REPO / "README.md").read_text().lower()
    with helm.Chart.load(CHART) as chart:
        assert "replicas" not in chart.values and "replicaCount" not in chart.values


# -- values the chart refuses ----------------------------------------------------------------

@pytest.mark.parametrize("overrides, set_string, names", [
    ({}, ("persistence.enabled=false",), "/persistence/enabled"),
    ({"hostNetwork": "yes"}, (), "/hostNetwork"),
    ({}, ("epics.caPort=5064",), "/epics/caPort"),
    ({}, ("api.port=8080",), "/api/port"),
    ({"epics": {"workerPorts": "5100-51x"}}, (), "/epics/workerPorts"),
    ({"epics": {"workerPvaPorts": "5300"}}, (), "/epics/workerPvaPorts"),
    ({"epicsService": {"type": "ExternalName"}}, (), "/epicsService/type"),
    ({"probes": {"startup": {"failureThreshold": 0}}}, (), "/probes/startup/failureThreshold"),
    ({"persistence": {"size": "lots"}}, (), "/persistence/size"),
    ({"replicaCount": 2}, (), "replicaCount"),
], ids=["enabled-as-string", "hostNetwork-yes", "port-as-string", "api-port-as-string", "bad-range",
        "not-a-range", "service-type", "probe-threshold", "size", "unknown-key"])
def test_wrong_values_are_refused_naming_the_field(overrides: dict[str, Any], set_string: tuple[str, ...],
                                                   names: str) -> None:
    message = refusal(overrides, set_string=set_string)
    assert names in message, message


@pytest.mark.parametrize("overrides, names", [
    ({"epics": {"workerPorts": "5200-5100"}}, "epics.workerPorts"),
    ({"epics": {"workerPorts": "5100-70000"}}, "epics.workerPorts"),
    ({"epics": {"workerPorts": "5100-9000"}}, "at most 1000"),
    ({"epics": {"workerPorts": "5350-5360"}}, "overlap"),
    ({"epics": {"workerPorts": "5000-5099"}}, "epics.caPort 5064"),
    ({"api": {"port": 5150}}, "api.port 5150"),
    ({"epics": {"pvaPort": 5064}}, "epics.caPort and epics.pvaPort"),
    ({"networkPolicy": {"enabled": True}}, "networkPolicy.epicsCIDRs"),
    ({"metrics": {"serviceMonitor": {"enabled": True}}}, "metrics.enabled"),
    ({"extraArgs": ["--worker-ports=6000-6099"]}, "--worker-ports"),
    ({"extraArgs": ["--worker-port", "6000-6099"]}, "--worker-ports"),  # argparse abbreviation
    ({"extraArgs": ["--epics-host=127.0.0.1"]}, "--epics-host"),
    ({"extraEnv": [{"name": "IOCHOST_ADMIN_TOKEN", "value": "x"}]}, "IOCHOST_ADMIN_TOKEN"),
    ({"extraArgs": ["--plugins-file=/data/plugins.yaml"]}, "--plugins-file"),
    ({"extraArgs": ["--plugins", "/data/plugins.yaml"]}, "--plugins-file"),  # argparse abbreviation
    ({"extraEnv": [{"name": "IOCMNG_PLUGINS_CONFIG", "value": "/data/p.yaml"}]}, "IOCMNG_PLUGINS_CONFIG"),
    ({"extraEnv": [{"name": "IOCHOST_PLUGINS_FILE", "value": "/data/p.yaml"}]}, "IOCHOST_PLUGINS_FILE"),
])
def test_inconsistent_values_are_refused(overrides: dict[str, Any], names: str) -> None:
    message = refusal(overrides)
    assert names in message, message
