"""Upgrade in place (POST /plugins/{name}/upgrade): the new revision is fetched and validated
while the old worker serves; kept after its probation, rolled back when it does not run.

Real git repositories by file:// URL, a real daemon over HTTP, PVs read and monitored with
real CA clients (libca).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from client_harness import EpicsClient
from conftest import Processes
from daemon_harness import Daemon, EventStream, add, delete, wait_until
from gitrepos import Repo, git

PREFIX = "IOCHT:SHIFTER"
# A libca client whose server went away searches again on its disconnect governor's next
# tick (every 10 s), whoever serves the PV meanwhile: reads after a switch may wait for it.
RECONNECT = 15.0

CODE = """\
    import os
    from iochost import TaskBase


    class Shifter(TaskBase):
        def initialize(self):
            {initialize}
            self.set_pv("CODE", "{version} gain=" + str(self.parameters.get("gain")))

        def execute(self):
            {execute}

        def cleanup(self):
            pass
"""
CONFIG = """\
    parameters:
      interval: 0.2
    pvs:
      inputs:
        SETPOINT: {type: float, value: 1.0, low: 0, high: 100}
      outputs:
        CODE: {type: string}
"""


def revision(repo: Repo, version: str, initialize: str = "pass", execute: str = "pass", code: str | None = None) -> str:
    text = code if code is not None else CODE.format(version=version, initialize=initialize, execute=execute)
    repo.write({"shifter.py": text, "config.yaml": CONFIG})
    return repo.commit(version)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("upgrade")
    # --import-timeout: a probe the race test holds at a gate must outlast a delete, an add and an upgrade
    with Daemon(root / "data", "--upgrade-probation", "1.5", "--backoff-initial", "0.5",
                "--heartbeat-interval", "0.5", "--add-rate", "off", "--import-timeout", "300").serving() as d:
        yield d


@pytest.fixture(scope="module")
def api(daemon: Daemon) -> Iterator[httpx.Client]:
    with daemon.client() as client:
        yield client


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    return Repo(tmp_path_factory.mktemp("repos") / "shifter")


@pytest.fixture(scope="module")
def commits(repo: Repo) -> dict[str, str]:
    """v1 and v2 that work, v3 that fails validation, v4 that crashes after its start, v5
    whose initialize() raises; main stays at v2 (what an operator last released)."""
    made = {"v1": revision(repo, "v1")}
    made["v3"] = revision(repo, "v3", code="from iochost import TaskBase\n\nclass Shifter(TaskBase)\n    pass\n")
    made["v4"] = revision(repo, "v4", execute="os._exit(3)")
    made["v5"] = revision(repo, "v5", initialize='raise RuntimeError("no hardware")')
    made["v2"] = revision(repo, "v2")
    return made


@pytest.fixture()
def client(processes: Processes, tmp_path: Path) -> Iterator[EpicsClient]:
    epics = EpicsClient(processes, tmp_path, dict(os.environ))
    yield epics
    epics.close()


def record(api: httpx.Client) -> dict[str, Any]:
    response = api.get("/plugins/shifter")
    assert response.status_code == 200, response.text
    return response.json()


def upgrade(api: httpx.Client, **body: Any) -> httpx.Response:
    return api.post("/plugins/shifter/upgrade", json=body)


@pytest.fixture(scope="module")
def shifter(api: httpx.Client, repo: Repo, commits: dict[str, str]) -> dict[str, Any]:
    return add(api, "shifter", repo, commit=commits["v1"])


@pytest.mark.slow
def test_a_good_upgrade_runs_the_new_code_and_keeps_the_values(
        daemon: Daemon, api: httpx.Client, commits: dict[str, str], shifter: dict[str, Any],
        client: EpicsClient) -> None:
    assert client.get([f"{PREFIX}:CODE"])[f"{PREFIX}:CODE"] == "v1 gain=None"
    assert client.put({f"{PREFIX}:SETPOINT": 42.5}) == {f"{PREFIX}:SETPOINT": True}
    old_pid = shifter["pid"]
    with EventStream(daemon) as events:
        response = upgrade(api, commit=commits["v2"], parameters={"gain": 3})
        assert response.status_code == 200, response.text
        phases = wait_until(lambda: (seen := [e["data"]["phase"] for e in list(events.events)
                                              if e["type"] == "upgrade"])[-1:] == ["succeeded"] and seen,
                            10, what="the upgrade's events")
    body = response.json()
    assert body["source"]["commit"] == commits["v2"] and body["previous_commit"] == commits["v1"]
    assert body["parameters"] == {"gain": 3} and body["state"] == "running" and body["pid"] != old_pid
    assert phases == ["started", "validated", "succeeded"]
    values = client.get([f"{PREFIX}:CODE", f"{PREFIX}:SETPOINT"], timeout=RECONNECT)
    assert values == {f"{PREFIX}:CODE": "v2 gain=3", f"{PREFIX}:SETPOINT": 42.5}

    again = upgrade(api, commit=commits["v2"][:12])  # the same commit, abbreviated: nothing to do
    assert again.status_code == 200, again.text
    assert again.json()["pid"] == body["pid"] and again.json()["previous_commit"] == commits["v1"]


def test_a_revision_that_fails_validation_changes_nothing_and_the_pvs_never_drop(
        api: httpx.Client, commits: dict[str, str], shifter: dict[str, Any], client: EpicsClient) -> None:
    before = record(api)
    assert before["state"] == "running"
    code = client.get([f"{PREFIX}:CODE"], timeout=RECONNECT)[f"{PREFIX}:CODE"]  # whichever revision runs
    client.monitor(f"{PREFIX}:CODE")
    client.update(f"{PREFIX}:CODE", False, lambda v: v is not None, 10, "the first CODE update")
    since = client.mark()
    response = upgrade(api, commit=commits["v3"])
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == "VALIDATION_FAILED"
    assert any(e.get("file") == "shifter.py" and e.get("line") == 3 for e in error["errors"]), error
    after = record(api)
    assert (after["pid"], after["source"]["commit"], after["state"]) == (before["pid"], before["source"]["commit"],
                                                                         "running")
    assert client.get([f"{PREFIX}:CODE"], timeout=RECONNECT)[f"{PREFIX}:CODE"] == code
    dropped = [m for m in client.messages[since:] if m.get("update") == f"{PREFIX}:CODE" and m["value"] is None]
    assert dropped == [], "the old revision's PVs disconnected during a failed upgrade"


@pytest.mark.slow
@pytest.mark.parametrize("bad, gist", [("v4", "exited within its 1.5 s probation"),
                                       ("v5", "did not start: initialize() raised RuntimeError: no hardware")])
def test_a_new_revision_that_does_not_run_is_rolled_back(
        api: httpx.Client, commits: dict[str, str], shifter: dict[str, Any], client: EpicsClient,
        bad: str, gist: str) -> None:
    before = record(api)
    code = client.get([f"{PREFIX}:CODE"], timeout=RECONNECT)[f"{PREFIX}:CODE"]
    response = upgrade(api, commit=commits[bad])
    assert response.status_code == 409, response.text
    error = response.json()
    assert error["code"] == "UPGRADE_FAILED" and gist in error["message"], error
    assert f"rolled back to {before['source']['commit'][:12]}" in error["message"]
    assert error["log_tail"], error  # the end of the new worker's log, or initialize()'s traceback
    after = record(api)
    assert after["state"] == "running" and after["source"]["commit"] == before["source"]["commit"]
    assert after["previous_commit"] == before["previous_commit"] and after["pid"] != before["pid"]
    assert client.get([f"{PREFIX}:CODE"], timeout=RECONNECT)[f"{PREFIX}:CODE"] == code  # the old one serves again


@pytest.mark.slow
def test_the_kept_revision_survives_a_daemon_restart_and_requests_are_checked(
        daemon: Daemon, api: httpx.Client, repo: Repo, commits: dict[str, str], shifter: dict[str, Any]) -> None:
    assert upgrade(api, commit="zz").status_code == 422  # not a SHA: the body is refused
    missing = api.post("/plugins/nothing/upgrade", json={})
    assert missing.status_code == 404 and missing.json()["code"] == "PLUGIN_NOT_FOUND"
    assert upgrade(api, commit="f" * 40).json()["code"] == "FETCH_FAILED"
    staging = list((daemon.data_dir / "tmp").iterdir())
    assert staging == [], f"an upgrade left {staging}"

    follows = upgrade(api, branch="main")  # a branch: its tip, v2 (already running): nothing to do
    assert follows.status_code == 200 and follows.json()["source"]["commit"] == commits["v2"]
    before = record(api)
    daemon.terminate()
    daemon.start()
    after = wait_until(lambda: (r := record(api))["state"] == "running" and r, 60, what="restored after restart")
    assert after["source"]["commit"] == commits["v2"] and after["previous_commit"] == before["previous_commit"]
    checkout = daemon.data_dir / "plugins" / "shifter"
    assert git(checkout, "rev-parse", "HEAD") == commits["v2"]


GATED_IMPORT = """\
    import pathlib
    import time

    from iochost import TaskBase

    GATE = pathlib.Path({gate!r})
    (GATE / "importing").write_text(__file__)  # where this revision was staged
    while not (GATE / "go").exists():
        time.sleep(0.05)


    class Shifter(TaskBase):
        def execute(self):
            pass
"""


@pytest.mark.slow
def test_a_deleted_plugins_upgrade_never_touches_its_replacement(
        daemon: Daemon, api: httpx.Client, repo: Repo, commits: dict[str, str], client: EpicsClient,
        tmp_path: Path) -> None:
    """Upgrade `racer` to a revision whose import waits at a gate, delete `racer`, add it
    again and upgrade it to a revision whose initialize() raises (after a gate of its own);
    the first upgrade's thread goes on between the second's swap and its rollback. It must
    clean only its own staging area: the rollback works and the registry names what runs."""
    gate = tmp_path / "gate"
    gate.mkdir()
    slow = revision(repo, "slow", code=GATED_IMPORT.format(gate=str(gate)))
    held = revision(repo, "held", initialize=(  # swapped in, then held until the test lets it fail
        f'open({str(gate / "initializing")!r}, "w").close()\n'
        f'            while not os.path.exists({str(gate / "fail")!r}):\n'
        '                __import__("time").sleep(0.05)\n'
        '            raise RuntimeError("no hardware")'))
    name, prefix, tmp = "racer", "IOCHT:RACER", daemon.data_dir / "tmp"
    add(api, name, repo, commit=commits["v1"])
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(api.post, f"/plugins/{name}/upgrade", json={"commit": slow})
        staged = Path(wait_until(lambda: (gate / "importing").is_file() and (gate / "importing").read_text(), 120,
                               what="the slow revision's validation import"))
        area = next(parent for parent in staged.parents if parent.parent == tmp)  # the first upgrade's
        assert api.delete(f"/plugins/{name}").status_code == 200
        ended = first.result(timeout=60)
        assert ended.status_code == 409 and ended.json()["code"] == "UPGRADE_FAILED", ended.text
        assert "deleted during its upgrade" in ended.json()["message"]
        add(api, name, repo, commit=commits["v1"])
        second = pool.submit(api.post, f"/plugins/{name}/upgrade", json={"commit": held})
        wait_until(lambda: (gate / "initializing").exists(), 120, what="the held revision's initialize()")
        (gate / "go").touch()  # the deleted plugin's upgrade goes on, while the new one runs `held`
        wait_until(lambda: not area.exists(), 120, what="the first upgrade's staging area to go")
        (gate / "fail").touch()
        failed = second.result(timeout=120)
    assert failed.status_code == 409, failed.text
    error = failed.json()
    assert error["code"] == "UPGRADE_FAILED", error
    assert "initialize() raised RuntimeError: no hardware" in error["message"], error
    assert f"rolled back to {commits['v1'][:12]}" in error["message"], error
    after = api.get(f"/plugins/{name}").json()
    assert after["state"] == "running" and after["source"]["commit"] == commits["v1"], after
    assert client.get([f"{prefix}:CODE"], timeout=RECONNECT)[f"{prefix}:CODE"] == "v1 gain=None"
    wait_until(lambda: list(tmp.iterdir()) == [], 30, what="no staging area left")

    daemon.terminate()
    daemon.start()
    restored = wait_until(lambda: (r := api.get(f"/plugins/{name}").json()).get("state") == "running" and r, 60,
                          what="racer restored")
    assert restored["source"]["commit"] == commits["v1"]
    assert git(daemon.data_dir / "plugins" / name, "rev-parse", "HEAD") == commits["v1"]
    assert client.get([f"{prefix}:CODE"], timeout=RECONNECT)[f"{prefix}:CODE"] == "v1 gain=None"
    delete(api, name)
