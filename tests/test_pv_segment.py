"""config.yaml's ``prefix:`` under the daemon (iocmng's PLUGIN_PREFIX, MANUAL section 21:
``{CONTROLLER_PREFIX}:{PLUGIN_PREFIX}:{PV}``, PLUGIN_PREFIX being config.yaml's ``prefix`` or
the plugin name upper-cased): the worker's records, the record's PV list, the displays and
the operator's controls by name; and plugins whose PVs would share names refused at add,
upgrade and restore, leaving nothing behind.

A real daemon over HTTP, plugins from real git repositories (and local paths for the
restore), PVs read over CA with libca.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import ca_search, wait_for
from daemon_harness import Daemon, add, delete, snapshot, wait_until
from gitrepos import git, plugin_repo
from sample_plugins import TICKER

PREFIX = "IOCHSG"  # this module's daemon: a CA channel of another module's daemon is never ours
SYSTEM = f"{PREFIX}:IOCHOST"


def config(segment: str | None) -> str:
    """The ticker's config (VALUE counts up), with ``prefix: SEGMENT`` when given."""
    lines = [f"prefix: {segment}"] if segment else []
    return "\n".join(lines + ["parameters: {interval: 0.2}", "pvs:", "  outputs:", "    VALUE: {type: int}", ""])


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("segment")
    with Daemon(root / "data", "--prefix", PREFIX, "--heartbeat-interval", "0.5", "--epics-control",
                "--add-rate", "off", "--upgrade-probation", "1").serving() as d:
        yield d


@pytest.fixture(scope="module")
def api(daemon: Daemon) -> Iterator[httpx.Client]:
    with daemon.client() as client:
        yield client


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("repos")


@pytest.fixture(scope="module")
def seg_a(api: httpx.Client, repos: Path) -> dict[str, Any]:
    """Plugin ``seg-a`` whose config.yaml says ``prefix: SEGA``: its PVs are IOCHSG:SEGA:*."""
    return add(api, "seg-a", plugin_repo(repos, "seg-a", TICKER, config("SEGA"), module="ticker"))


@pytest.mark.slow
def test_the_segment_names_the_records_the_list_and_the_displays(api, seg_a, ca):
    assert seg_a["pv_prefix"] == f"{PREFIX}:SEGA"
    assert seg_a["pvs"] and all(pv.startswith(f"{PREFIX}:SEGA:") for pv in seg_a["pvs"])
    assert f"{PREFIX}:SEGA:VALUE" in seg_a["pvs"]
    first = wait_for(lambda: ca.caget(f"{PREFIX}:SEGA:VALUE", timeout=2), timeout=30, what="VALUE counting")
    wait_for(lambda: ca.caget(f"{PREFIX}:SEGA:VALUE", timeout=2) > first, timeout=30, what="VALUE counting on")
    assert ca_search([f"{PREFIX}:SEG-A:VALUE", f"{PREFIX}:SEG-A:STATUS"]) == set()  # not under its name
    bob = api.get("/plugins/seg-a/display.bob")
    assert bob.status_code == 200
    assert f"{PREFIX}:SEGA:VALUE" in bob.text and f"{PREFIX}:SEGA:ENABLE" in bob.text
    assert f"{PREFIX}:SEG-A:" not in bob.text
    index = api.get("/displays/index.bob").text
    assert f"{PREFIX}:SEGA:STATUS" in index and f"{PREFIX}:SEG-A:" not in index
    startup = api.get("/tasks/seg-a/startup")
    if startup.status_code == 200:  # iocmng's start-up record, where this build serves it
        assert startup.json()["pv_prefix"] == f"{PREFIX}:SEGA" and startup.json()["plugin_prefix"] == "SEGA"


def test_operators_control_it_by_name(api, seg_a, ca):
    """The daemon's STOP/START PVs and REST take the plugin's name, whatever its segment."""
    wait_for(lambda: ca_search([f"{SYSTEM}:STOP"]) == {f"{SYSTEM}:STOP"}, timeout=30, what="the daemon's IOC")
    ca.caput(f"{SYSTEM}:STOP", "seg-a", datatype=ca.DBR_CHAR_STR, wait=True, timeout=5)
    wait_until(lambda: api.get("/plugins/seg-a").json()["state"] == "stopped", what="stopped by STOP")
    assert api.post("/plugins/seg-a/start").status_code == 200
    assert api.get("/plugins/seg-a").json()["state"] == "running"
    wait_for(lambda: ca.caget(f"{PREFIX}:SEGA:STATUS", timeout=2) is not None, timeout=30, what="served again")


@pytest.mark.parametrize("name, segment, owner", [
    ("other", "SEGA", "plugin 'seg-a'"),  # the same segment
    ("lower", "sega", "plugin 'seg-a'"),  # differing only in case: operators cannot tell them apart
    ("sega", None, "plugin 'seg-a'"),  # its name, upper-cased, is seg-a's segment
    ("daemonish", "IOCHOST", "the daemon's own PVs"),  # the daemon's own segment
    ("underdaemon", "IOCHOST:ROW001", "the daemon's own PVs"),  # inside it: its table rows are named so
    ("undera", "SEGA:VALUE", "plugin 'seg-a'"),  # inside seg-a's: one's PV names could be the other's
])
def test_an_add_whose_pvs_would_collide_is_refused_leaving_nothing(api, daemon, repos, seg_a, name, segment, owner):
    repo = plugin_repo(repos, name, TICKER, config(segment), module="ticker")
    before = snapshot(daemon)
    response = api.post("/plugins", json={"name": name, "git_url": repo.url})
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["code"] == "PLUGIN_EXISTS"
    assert f"plugin {name!r}" in body["message"] and owner in body["message"], body
    assert api.get(f"/plugins/{name}").status_code == 404
    wait_until(lambda: snapshot(daemon) == before, what="nothing left of the refused add")
    assert api.get("/plugins/seg-a").json()["state"] == "running"


@pytest.mark.slow
def test_a_segment_nested_in_anothers_is_refused_both_ways(api, daemon, repos, seg_a):
    """``NEST`` declaring the PV ``SUB:VALUE`` and ``NEST:SUB`` (whose VALUE is that same
    name) cannot both serve: whichever comes second is refused, naming the first; a segment
    beside it (``NEST-SUB``) is not inside it and is accepted."""
    nested = config("NEST").replace("    VALUE: {type: int}", "    VALUE: {type: int}\n    SUB:VALUE: {type: int}")
    outer = plugin_repo(repos, "nest-outer", TICKER, nested, module="ticker")
    inner = plugin_repo(repos, "nest-inner", TICKER, config("NEST:SUB"), module="ticker")
    for first, second, repo in (("nest-outer", "nest-inner", inner), ("nest-inner", "nest-outer", outer)):
        add(api, first, outer if first == "nest-outer" else inner)
        try:
            before = snapshot(daemon)
            response = api.post("/plugins", json={"name": second, "git_url": repo.url})
            assert response.status_code == 409, response.text
            assert response.json()["code"] == "PLUGIN_EXISTS", response.text
            assert f"plugin {first!r}" in response.json()["message"], response.text
            assert api.get(f"/plugins/{second}").status_code == 404
            wait_until(lambda: snapshot(daemon) == before, what="nothing left of the refused add")
        finally:
            delete(api, first)
    beside = plugin_repo(repos, "nest-beside", TICKER, config("NEST-SUB"), module="ticker")
    add(api, "nest-outer", outer)
    try:
        assert add(api, "nest-beside", beside)["pv_prefix"] == f"{PREFIX}:NEST-SUB"
        delete(api, "nest-beside")
    finally:
        delete(api, "nest-outer")


def test_two_adds_claiming_one_segment_at_once_one_wins(api, daemon, repos, seg_a):
    """The check and the claim are one step on the daemon's loop: of two adds racing for
    ``RACE`` (and one for ``RACE:IN``, inside it), exactly one is added, whichever it is."""
    names = ("race-a", "race-b", "race-c")
    urls = {name: plugin_repo(repos, name, TICKER, config("RACE:IN" if name == "race-c" else "RACE"),
                              module="ticker").url for name in names}
    before = snapshot(daemon)
    with ThreadPoolExecutor(len(names)) as pool:
        answers = dict(zip(names, pool.map(lambda name: api.post("/plugins", json={
            "name": name, "git_url": urls[name]}), names), strict=True))
    added = [name for name, answer in answers.items() if answer.status_code == 201]
    try:
        assert len(added) == 1, {name: answer.text for name, answer in answers.items()}
        for name, answer in answers.items():
            if name not in added:
                assert answer.status_code == 409 and answer.json()["code"] == "PLUGIN_EXISTS", answer.text
                assert f"plugin {added[0]!r}" in answer.json()["message"], answer.text
                assert api.get(f"/plugins/{name}").status_code == 404
    finally:
        for name in added:
            delete(api, name)
    wait_until(lambda: snapshot(daemon) == before, what="nothing left of the refused adds")


def test_a_name_taking_a_segment_claimed_first_is_refused_the_other_way_too(api, repos, seg_a):
    """``segname`` (SEGNAME) runs; a plugin claiming SEGNAME by its prefix: comes after it."""
    add(api, "segname", plugin_repo(repos, "segname", TICKER, config(None), module="ticker"))
    try:
        repo = plugin_repo(repos, "claimer", TICKER, config("SEGNAME"), module="ticker")
        response = api.post("/plugins", json={"name": "claimer", "git_url": repo.url})
        assert response.status_code == 409 and "plugin 'segname'" in response.json()["message"], response.text
    finally:
        delete(api, "segname")


@pytest.mark.slow
def test_an_upgrade_to_a_colliding_segment_is_refused_and_one_to_a_free_one_renames(api, daemon, repos, seg_a, ca):
    repo = plugin_repo(repos, "mover", TICKER, config(None), module="ticker")
    first = add(api, "mover", repo)
    try:
        assert first["pv_prefix"] == f"{PREFIX}:MOVER"
        repo.write({"config.yaml": config("SEGA")})
        taken = repo.commit("take seg-a's segment")
        before = snapshot(daemon)
        response = api.post("/plugins/mover/upgrade", json={"commit": taken})
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "PLUGIN_EXISTS" and "plugin 'seg-a'" in response.json()["message"]
        record = api.get("/plugins/mover").json()
        assert (record["source"]["commit"], record["state"], record["pv_prefix"]) == (
            first["source"]["commit"], "running", f"{PREFIX}:MOVER")
        wait_until(lambda: snapshot(daemon)[:2] == before[:2], what="the staged revision removed")
        assert ca.caget(f"{PREFIX}:MOVER:STATUS", timeout=10) is not None  # the old revision serves on

        repo.write({"config.yaml": config("MOVED")})
        free = repo.commit("a segment of its own")
        response = api.post("/plugins/mover/upgrade", json={"commit": free})
        assert response.status_code == 200, response.text
        record = response.json()
        assert record["pv_prefix"] == f"{PREFIX}:MOVED"
        assert f"{PREFIX}:MOVED:VALUE" in record["pvs"]
        wait_for(lambda: ca.caget(f"{PREFIX}:MOVED:VALUE", timeout=2) > 0, timeout=30, what="the new names")
        assert f"{PREFIX}:MOVED:VALUE" in api.get("/plugins/mover/display.bob").text
        # the segment it left is free again
        response = api.post("/plugins", json={"name": "mover2", "git_url": plugin_repo(
            repos, "mover2", TICKER, config("MOVER"), module="ticker").url})
        assert response.status_code == 201, response.text
        delete(api, "mover2")
    finally:
        delete(api, "mover")


@pytest.mark.slow
def test_restore_refuses_a_segment_another_plugin_has_the_first_in_boot_order_keeps_it(tmp_path):
    """Two plugins of local directories; while the daemon is down, beta's registered revision
    becomes a commit of its checkout that takes alpha's name as its segment (a registry an
    older iochost wrote, or a restored backup, can hold such a pair: this one refuses the add
    and the upgrade). At the next start the first in boot order (same order: by name) keeps
    the names and the other is refused, naming it, however long each checkout takes to
    restore: alpha's is made the slow one (its checkout moved off its registered commit
    across many files, which the restore checks out back), which let beta claim first."""
    sources = tmp_path / "sources"
    for name in ("alpha", "beta"):
        repo = plugin_repo(sources, name, TICKER, config(None), module="ticker")
        if name == "alpha":
            repo.write({f"data/file{i:04}.txt": "one\n" for i in range(3000)})
            repo.commit("data")
    daemon = Daemon(tmp_path / "data", "--prefix", "IOCHSR", "--heartbeat-interval", "0.5")
    try:
        daemon.start()
        with daemon.client() as api:
            for name in ("alpha", "beta"):
                response = api.post("/plugins", json={"name": name,
                                                      "local_path": str(sources / f"repo-{name}")})
                assert response.status_code == 201, response.text
        assert daemon.terminate() == 0
        alpha = tmp_path / "data" / "plugins" / "alpha"
        for i in range(3000):
            (alpha / "data" / f"file{i:04}.txt").write_text("two\n")
        git(alpha, "commit", "-q", "-am", "moved on: the restore brings it back")
        checkout = tmp_path / "data" / "plugins" / "beta"
        (checkout / "config.yaml").write_text(config("ALPHA"))
        git(checkout, "commit", "-q", "-am", "take alpha's name")
        registry = tmp_path / "data" / "registry.json"
        data = json.loads(registry.read_text())
        data["plugins"]["beta"]["commit"] = git(checkout, "rev-parse", "HEAD")
        registry.write_text(json.dumps(data))
        daemon.start()
        with daemon.client() as api:
            def settled() -> dict[str, Any] | None:
                records = {name: api.get(f"/plugins/{name}").json() for name in ("alpha", "beta")}
                states = sorted(record["state"] for record in records.values())
                return records if states == ["failed", "running"] else None

            records = wait_until(settled, timeout=60, what="one restored, one refused")
            assert (records["alpha"]["state"], records["beta"]["state"]) == ("running", "failed"), records
            assert "PVs would be named IOCHSR:ALPHA:" in records["beta"]["last_error"], records
            assert "plugin 'alpha'" in records["beta"]["last_error"], records
            assert records["alpha"]["pv_prefix"] == "IOCHSR:ALPHA"
        assert daemon.terminate() == 0
    finally:
        daemon.cleanup()


HOLD_SETUP = """
    import os
    import time
    from pathlib import Path

    from setuptools import setup

    Path({building!r}).touch()
    while os.path.exists({hold!r}):  # the environment's rebuild waits for the test
        time.sleep(0.1)
    setup()
"""


@pytest.mark.slow
def test_an_add_during_the_restore_does_not_take_a_registered_plugins_names(tmp_path):
    """A registered plugin (segment HELD) whose restore is slow (its environment is rebuilt at
    start: held here, in its package's build, until the test lets it go) keeps its names: an
    add arriving meanwhile that claims them is refused naming it (it used to be added, and the
    registered plugin then failed at its restore)."""
    hold, building = tmp_path / "hold", tmp_path / "building"
    sources = tmp_path / "sources"
    repo = plugin_repo(sources, "held", TICKER, config("HELD"), module="ticker")
    repo.write({"requirements.txt": "./vendor/holdpkg\n",
                "vendor/holdpkg/pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\n'
                                                 'build-backend = "setuptools.build_meta"\n'
                                                 '[project]\nname = "holdpkg"\nversion = "1"\n',
                "vendor/holdpkg/setup.py": HOLD_SETUP.format(building=str(building), hold=str(hold)),
                "vendor/holdpkg/holdpkg/__init__.py": ""})
    repo.commit("a package to build")
    newcomer = plugin_repo(sources, "newcomer", TICKER, config("HELD"), module="ticker")
    daemon = Daemon(tmp_path / "data", "--prefix", "IOCHSB", "--heartbeat-interval", "0.5")
    try:
        daemon.start()
        with daemon.client() as api:
            assert api.post("/plugins", json={"name": "held", "git_url": repo.url}).status_code == 201
        assert daemon.terminate() == 0
        (tmp_path / "data" / "envs" / "held" / ".iochost-requirements.sha256").unlink()  # rebuilt at start
        hold.touch()
        building.unlink()
        daemon.start()
        with daemon.client() as api:
            wait_for(building.exists, timeout=120, what="the restore rebuilding held's environment")
            assert api.get("/plugins/held").json()["state"] == "pending"
            before = snapshot(daemon)
            response = api.post("/plugins", json={"name": "newcomer", "git_url": newcomer.url})
            assert response.status_code == 409, response.text
            assert response.json()["code"] == "PLUGIN_EXISTS" and "plugin 'held'" in response.json()["message"]
            wait_until(lambda: snapshot(daemon) == before, what="nothing left of the refused add")
            hold.unlink()
            record = wait_until(lambda: (r := api.get("/plugins/held").json())["state"] == "running" and r,
                                timeout=120, what="held restored")
            assert record["pv_prefix"] == "IOCHSB:HELD"
        assert daemon.terminate() == 0
    finally:
        hold.unlink(missing_ok=True)
        daemon.cleanup()


# -- the rule, as a property: two prefixes clash exactly when some PV names of theirs can meet --------
SMALL_SEGMENT = st.from_regex(r"[Aa]{1,2}(:[Aa]{1,2}){0,2}", fullmatch=True)


@given(SMALL_SEGMENT, SMALL_SEGMENT, SMALL_SEGMENT, SMALL_SEGMENT)
def test_prefixes_clash_exactly_when_pv_names_can_meet(one, other, pv_one, pv_other):
    """A PV of ``one`` (its own name may hold ':') named as one of ``other``'s, case aside,
    only if the prefixes are the same or nested; and nested ones always have such a pair."""
    from iochost.config.pvnames import nested_segment, same_segment

    clash = same_segment(one, other) or nested_segment(one, other)
    if f"{one}:{pv_one}".upper() == f"{other}:{pv_other}".upper():
        assert clash
    if nested_segment(one, other):
        outer, inner = sorted((one, other), key=len)
        assert f"{outer}:{inner[len(outer) + 1:]}:STATUS".upper() == f"{inner}:STATUS".upper()
    assert nested_segment(one, other) == nested_segment(other, one) and not (
        same_segment(one, other) and nested_segment(one, other))
