"""The Helm chart (helm/iochost): lint, render, validate, and check what an operator relies on.

No cluster and no helm binary: helm-python-sdk binds Helm's Go SDK (libhelm_c), so
``Chart.render`` is ``helm template`` and ``lint`` is ``helm lint``, offline, values schema
included. Every rendered object is validated by kubernetes-validate in strict mode against
the Kubernetes KUBE_VERSION schemas it ships. The ServiceMonitor is a Prometheus Operator
CRD kubernetes-validate has no schema for: its essential fields are checked here instead
(check_service_monitor). The daemon's own argument parser and Settings read the container's
args, so the chart cannot pass a flag or a value the daemon would refuse or read otherwise.

Here: lint, validation, ports, security context, probes, persistence, metrics. The daemon's
view is in test_chart_daemon.py, the plugins list and values schema in test_chart_plugins.py;
both use the rendering helpers here.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "iochost"
KUBE_VERSION = "1.30.0"
RELEASE, NAMESPACE = "beamline", "controls"
FULLNAME = "beamline-iochost"
SECRET = "iochost-tokens"

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
                                  {"namespaceSelector": {
                                      "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
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


def test_the_pods_stop_timeout_covers_the_daemons_whole_shutdown() -> None:
    """Derived from the grace periods the chart knows: the daemon's (passed as --grace-period,
    the daemon's own default unless changed) and every declared plugin's, + the daemon's wait
    before a worker's SIGKILL + 3 s for its own exit; a shorter value given is refused."""
    from iochost.settings import Settings
    from iochost.supervisor.lifecycle_types import STOP_MARGIN

    assert yaml.safe_load((CHART / "values.yaml").read_text())["gracePeriod"] == Settings().grace_period
    default = render()
    assert default.flag("grace-period") == [str(Settings().grace_period).removesuffix(".0")]
    margin = default.pod["terminationGracePeriodSeconds"] - Settings().grace_period
    assert margin >= STOP_MARGIN + 3
    plugin = {"name": "slow-cleanup", "git_url": "https://git.example.org/lab/slow.git", "grace_period": 42.5}
    assert render({"plugins": [plugin]}).pod["terminationGracePeriodSeconds"] == 43 + margin
    assert render({"gracePeriod": 30}).pod["terminationGracePeriodSeconds"] == 30 + margin
    assert render({"terminationGracePeriodSeconds": 120}).pod["terminationGracePeriodSeconds"] == 120
    refused = refusal({"terminationGracePeriodSeconds": 20, "plugins": [plugin]})
    assert "terminationGracePeriodSeconds 20 is shorter than the daemon's shutdown" in refused
    assert "(42.5 s)" in refused


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

