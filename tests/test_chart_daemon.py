"""The Helm chart (helm/iochost) and the daemon it runs: the rendered container args, the beamline config, the control
PVs and access security file, and tokens are accepted by the real daemon's parsers; tokens are files from the
secret, never environment variables.
"""

from __future__ import annotations

from pathlib import Path

import helm_python as helm
import pytest
import yaml

from test_chart import (
    ACF,
    BASE,
    BEAMLINE,
    CHART,
    CONTROL,
    FULLNAME,
    PLUGINS_FILE,
    SCENARIOS,
    SECRET,
    merge,
    refusal,
    render,
)

TOKEN_DIR = "/run/secrets/iochost"
ACF_DIR = "/etc/iochost-access-security"
BEAMLINE_DIR = "/etc/iochost-beamline"


# -- the daemon reads the chart's args as the chart means them -------------------------------

@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_daemon_accepts_the_container_args(scenario: str, tmp_path: Path) -> None:
    from iochost.cli import build_parser
    from iochost.settings import Settings

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
    assert result.flag("epics-access-security") == [f"{ACF_DIR}/iochost.acf"]
    assert "--epics-control" in result.container["args"]
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
    from iochost.access_security_check import check_file

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

