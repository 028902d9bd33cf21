"""The Helm chart (helm/iochost)'s plugins list and values schema: the plugins config map and its checksum, the
rendered plugins file the daemon reads, wrong plugins and wrong or inconsistent values refused naming the field.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from iochost import plugins_file
from test_chart import (
    CHART,
    FULLNAME,
    PLUGIN_SECRET,
    PLUGIN_SECRETS_DIR,
    PLUGINS,
    PLUGINS_DIR,
    PLUGINS_FILE,
    PRIVATE_PLUGIN,
    PUBLIC_PLUGIN,
    REPO,
    Render,
    merge,
    refusal,
    render,
    validate,
)

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
    from iochost.store.entries import COMMIT_PATTERN

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
    assert "one replica" in (REPO / "docs" / "how-to" / "kubernetes.md").read_text().lower()
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

