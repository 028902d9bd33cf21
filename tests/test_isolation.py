"""Per-plugin isolation end to end: a plugin's requirements.txt goes into its own
environment (layered over the daemon's), and each worker runs under its own memory and
open-file limits. Real daemon, real pip, real soft IOCs; the only package index needed is
none: the test package is a local directory referenced by path from requirements.txt.
An upgrade's environment, the longest of these tests, is in test_isolation_upgrade.py."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from conftest import wait_for
from daemon_harness import Daemon, snapshot, wait_until
from gitrepos import Repo, git
from iochost.errors import ErrorCode
from iochost.store.envs import PluginEnvs, RequirementsError
from sample_plugins import TICKER

USES_PACKAGE = """
    import mypkg
    from iochost import TaskBase

    class UsesPackage(TaskBase):
        def initialize(self):
            pass

        def execute(self):
            self.set_pv("VALUE", mypkg.ANSWER)
            where = mypkg.__file__.split("/envs/")[-1]  # MESSAGE holds 40 characters
            self.set_message(f"answer {mypkg.ANSWER} in {where[:24]}")

        def cleanup(self):
            pass
"""
CONFIG = "parameters: {interval: 0.2}\npvs:\n  outputs:\n    VALUE: {type: int, value: 0}\n"
MYPKG_PYPROJECT = """
    [build-system]
    requires = ["setuptools>=61"]
    build-backend = "setuptools.build_meta"

    [project]
    name = "mypkg"
    version = "1.2.3"
"""
HOG = """
    from iochost import TaskBase

    class Hog(TaskBase):
        def initialize(self):
            self.kept = []

        def execute(self):
            self.kept.append(bytearray(50 * 1024 * 1024))  # 50 MB more every cycle, touched
            self.set_pv("HELD", len(self.kept) * 50)

        def cleanup(self):
            self.kept = []
"""
HOG_CONFIG = """
    parameters: {interval: 0.3, memory_limit_mb: 300}
    pvs:
      outputs:
        HELD: {type: int, unit: MB}
"""
OPENER = """
    import tempfile
    from iochost import TaskBase

    class Opener(TaskBase):
        def initialize(self):
            self.files = []

        def execute(self):
            for _ in range(100):
                self.files.append(tempfile.TemporaryFile())
            self.set_message(f"{len(self.files)} files open")

        def cleanup(self):
            for f in self.files:
                f.close()
"""
OPENER_CONFIG = "parameters: {interval: 0.5}\n"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with Daemon(tmp_path_factory.mktemp("isolation") / "data", "--backoff-initial", "1").serving() as d:
        yield d


@pytest.fixture(scope="module")
def api(daemon: Daemon) -> Iterator[httpx.Client]:
    with daemon.client(timeout=300) as client:
        yield client


def package_repo(root: Path, requirements: str) -> Repo:
    """A plugin importing `mypkg`, vendored in the repository as a pure-Python package."""
    repo = Repo(root / "repo")
    repo.write({
        "uses_package.py": USES_PACKAGE, "config.yaml": CONFIG, "requirements.txt": requirements,
        "vendor/mypkg/pyproject.toml": MYPKG_PYPROJECT, "vendor/mypkg/src/mypkg/__init__.py": "ANSWER = 42\n",
    })
    repo.commit("plugin with requirements")
    return repo


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def limits(pid: int) -> dict[str, str]:
    """Soft limits from /proc/PID/limits, by name."""
    found = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        match = re.match(r"(.+?)\s{2,}(\S+)\s+(\S+)", line)
        if match:
            found[match[1].strip()] = match[2]
    return found


# -- requirements.txt --------------------------------------------------------------------------------
@pytest.mark.slow
def test_requirements_installed_into_the_plugins_own_environment(daemon: Daemon, api: httpx.Client,
                                                                 tmp_path: Path) -> None:
    assert importlib.util.find_spec("mypkg") is None  # the daemon's environment does not have it
    repo = package_repo(tmp_path, "# vendored\n./vendor/mypkg\npyyaml  # the daemon's copy satisfies it\n")
    record = api.post("/plugins", json={"name": "withreqs", "git_url": repo.url})
    assert record.status_code == 201, record.text
    record = record.json()
    env = daemon.data_dir / "envs" / "withreqs"
    assert record["state"] == "running"
    message = wait_until(lambda: (m := api.get("/plugins/withreqs").json()["message"] or "").startswith("answer")
                         and m, what="the plugin's message")
    assert message.startswith("answer 42 in withreqs/lib/")  # imported from data/envs/withreqs
    assert cmdline(record["pid"])[0] == str(env.resolve() / "bin" / "python")
    checkout = daemon.data_dir / "plugins" / "withreqs"
    assert git(checkout, "status", "--porcelain", "--ignored") == ""  # no build/ or egg-info in the checkout
    installed = list((env / "lib").glob("python*/site-packages/mypkg-1.2.3.dist-info"))
    assert installed, "mypkg is installed in the plugin's environment"
    assert not list((env / "lib").glob("python*/site-packages/[Pp][Yy][Yy][Aa][Mm][Ll]*"))  # not duplicated

    # A plugin without requirements runs on the daemon's own interpreter, with no environment:
    # forked from the daemon's fork server, whose template runs that interpreter.
    plain = Repo(tmp_path / "plain").write({"ticker.py": TICKER, "config.yaml": CONFIG})
    plain.commit()
    other = api.post("/plugins", json={"name": "plain", "git_url": plain.url}).json()
    assert cmdline(other["pid"])[0].endswith("run/plain.json (forked)"), cmdline(other["pid"])
    assert not (daemon.data_dir / "envs" / "plain").exists()

    # Restarts, and a daemon restart (offline restore), reuse the environment as it is.
    marker = env / ".iochost-requirements.sha256"
    stamp = marker.stat().st_mtime_ns
    restarted = api.post("/plugins/withreqs/restart").json()
    assert restarted["state"] == "running" and cmdline(restarted["pid"])[0].startswith(str(env.resolve()))
    assert daemon.terminate() == 0
    daemon.start()
    wait_until(lambda: api.get("/plugins/withreqs").json()["state"] == "running", what="restored")
    restored = wait_until(lambda: (r := api.get("/plugins/withreqs").json())["state"] == "running"
                          and (r["message"] or "").startswith("answer") and r, what="the plugin's message")
    assert restored["message"].startswith("answer 42 in withreqs/lib/")
    assert cmdline(restored["pid"])[0].startswith(str(env.resolve()))
    assert marker.stat().st_mtime_ns == stamp and "reinstalling" not in daemon.log()

    for name in ("withreqs", "plain"):
        assert api.delete(f"/plugins/{name}").status_code == 200
    assert not env.exists() and list((daemon.data_dir / "envs").iterdir()) == []


def test_failing_requirement_shows_pip_error_and_leaves_nothing(daemon: Daemon, api: httpx.Client,
                                                               tmp_path: Path) -> None:
    repo = package_repo(tmp_path, "./vendor/mypkg\n./vendor/not-there\n")
    before = snapshot(daemon)
    response = api.post("/plugins", json={"name": "badreqs", "git_url": repo.url})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "VALIDATION_FAILED"
    [error] = body["errors"]
    assert error["stage"] == "requirements" and error["file"] == "requirements.txt"
    assert "./vendor/not-there" in error["message"] and "does not exist" in error["message"]
    assert "does not exist" in body["message"]
    assert snapshot(daemon) == before
    assert api.get("/plugins/badreqs").status_code == 404


@pytest.mark.parametrize("line, dist", [
    ("softioc==1.0", "softioc"),
    ("pydantic<2", "pydantic"),
    ("iochost>=99", "iochost"),
    ("pythonSoftIOC", "softioc"),
    ("cothread @ https://example.invalid/cothread.tar.gz", "cothread"),
])
def test_requirement_replacing_the_daemons_runtime_is_refused_before_pip(
        daemon: Daemon, api: httpx.Client, tmp_path: Path, line: str, dist: str) -> None:
    # Line 1 would make pip fail with "does not exist"; the answer naming line 3 shows pip never ran.
    repo = package_repo(tmp_path, f"./vendor/not-there\n# the daemon's runtime:\n{line}\n")
    before = snapshot(daemon)
    started = time.monotonic()
    response = api.post("/plugins", json={"name": "conflict", "git_url": repo.url})
    assert response.status_code == 422, response.text
    assert time.monotonic() - started < 10
    body = response.json()
    [error] = body["errors"]
    assert body["code"] == "VALIDATION_FAILED" and error["stage"] == "requirements"
    assert error["file"] == "requirements.txt" and error["line"] == 3
    assert line in error["message"] and f"{dist} {importlib.metadata.version(dist)}" in error["message"]
    assert "does not exist" not in response.text
    assert snapshot(daemon) == before


def test_transitive_conflict_is_caught_by_the_constraints(daemon: Daemon, api: httpx.Client,
                                                          tmp_path: Path) -> None:
    """numpy is not named in the refusal list, but softioc needs the daemon's numpy: pip is
    run with the daemon's worker runtime as constraints and cannot replace it either."""
    repo = package_repo(tmp_path, "numpy<2\n")
    before = snapshot(daemon)
    response = api.post("/plugins", json={"name": "oldnumpy", "git_url": repo.url})
    assert response.status_code == 422, response.text
    message = response.json()["errors"][0]["message"]
    assert "numpy" in message and "conflict" in message.lower()
    assert snapshot(daemon) == before


SLOW_BACKEND = """
    import time

    def get_requires_for_build_wheel(config_settings=None):
        time.sleep(120)  # a build that never ends
        return []

    build_wheel = get_requires_for_build_sdist = build_sdist = None
"""


@pytest.mark.slow
def test_requirements_time_limit_kills_pip_and_its_builds(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "slowpkg").mkdir(parents=True)
    (checkout / "slowpkg" / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "iochost_slow_backend"\nbackend-path = ["."]\n'
        '[project]\nname = "slowpkg"\nversion = "1"\n')
    (checkout / "slowpkg" / "iochost_slow_backend.py").write_text(SLOW_BACKEND.replace("\n    ", "\n"))
    (checkout / "requirements.txt").write_text("./slowpkg\n")
    envs = PluginEnvs(tmp_path / "data")
    started = time.monotonic()
    with pytest.raises(RequirementsError) as info:
        envs.install("slow", checkout, checkout, timeout=4)
    assert 4 <= time.monotonic() - started < 15
    assert info.value.code == ErrorCode.VALIDATION_FAILED
    assert "did not finish within 4 s" in info.value.problems[0].message
    assert list((tmp_path / "data" / "envs").iterdir()) == []
    leftovers = [pid for pid in os.listdir("/proc") if pid.isdigit() and _has(pid, b"iochost_slow_backend")]
    assert leftovers == []  # pip and the build backend it ran are gone


def _has(pid: str, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


# -- resource limits ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_memory_limit_crashes_only_the_hog(daemon: Daemon, api: httpx.Client, tmp_path: Path, ca) -> None:
    neighbour = Repo(tmp_path / "neighbour").write({"ticker.py": TICKER, "config.yaml": CONFIG})
    neighbour.commit()
    calm = api.post("/plugins", json={"name": "calm", "git_url": neighbour.url}).json()
    assert limits(calm["pid"])["Max data size"] == str(1024 * 1024 * 1024)  # the daemon's default
    assert limits(calm["pid"])["Max open files"] == "1024"
    hog_repo = Repo(tmp_path / "hog").write({"hog.py": HOG, "config.yaml": HOG_CONFIG})
    hog_repo.commit()
    hog = api.post("/plugins", json={"name": "hog", "git_url": hog_repo.url})
    assert hog.status_code == 201, hog.text
    assert limits(hog.json()["pid"])["Max data size"] == str(300 * 1024 * 1024)  # from its config.yaml

    value = calm["pv_prefix"] + ":VALUE"
    first = wait_for(lambda: ca.caget(value, timeout=3), timeout=20, what="neighbour cycling")
    record = wait_until(lambda: (r := api.get("/plugins/hog").json())["restarts"] >= 2 and r,
                        timeout=60, what="the hog to crash twice")
    assert "memory" in record["last_error"] and "300 MB" in record["last_error"], record["last_error"]
    crashes = [t for t in record["transitions"] if t["to_state"] == "crashed"]
    assert len(crashes) >= 2 and all("out of memory" in t["reason"] for t in crashes)
    assert "MemoryError" in "\n".join(api.get("/plugins/hog/logs").json()["lines"])

    # The neighbour never noticed: same process, still cycling; the daemon answers.
    assert api.get("/plugins/calm").json()["pid"] == calm["pid"] and api.get("/plugins/calm").json()["restarts"] == 0
    wait_for(lambda: ca.caget(value, timeout=3) > first + 5, timeout=10, what="neighbour still cycling")
    assert api.get("/health").status_code == 200
    for name in ("hog", "calm"):
        assert api.delete(f"/plugins/{name}").status_code == 200


@pytest.mark.slow
def test_open_files_limit_from_the_request(daemon: Daemon, api: httpx.Client, tmp_path: Path) -> None:
    repo = Repo(tmp_path / "opener").write({"opener.py": OPENER, "config.yaml": OPENER_CONFIG})
    repo.commit()
    added = api.post("/plugins", json={"name": "opener", "git_url": repo.url,
                                       "parameters": {"max_open_files": 64}})
    assert added.status_code == 201, added.text
    assert limits(added.json()["pid"])["Max open files"] == "64"
    record = wait_until(lambda: (r := api.get("/plugins/opener").json())["status"] == "ERROR" and r,
                        timeout=20, what="the plugin to run out of file descriptors")
    assert "Too many open files" in record["message"]
    assert record["state"] == "running" and record["restarts"] == 0  # a plugin error, not a crash
    bad = api.post("/plugins", json={"name": "opener2", "git_url": repo.url,
                                     "parameters": {"max_open_files": 3, "memory_limit_mb": "lots"}})
    assert bad.status_code == 422 and bad.json()["code"] == "VALIDATION_FAILED"
    fields = " ".join(e["message"] for e in bad.json()["errors"])
    assert "max_open_files" in fields and "memory_limit_mb" in fields
    assert api.delete("/plugins/opener").status_code == 200

