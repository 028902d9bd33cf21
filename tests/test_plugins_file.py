"""The plugins file (--plugins-file, IOCMNG_PLUGINS_CONFIG): plugins declared for GitOps."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

from client_harness import EpicsClient
from conftest import Processes, daemon_environ, free_port
from daemon_harness import Daemon, wait_until
from gitrepos import git, plugin_repo
from iochost.plugins_file import PluginsFileError, load_plugins_file
from sample_plugins import TICKER, TICKER_CONFIG


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# -- reading the file ----------------------------------------------------------------------------


def test_entries_become_add_requests_and_bad_ones_are_named(tmp_path: Path) -> None:
    token = write(tmp_path / "token", "s3cret\n")
    plugins = write(tmp_path / "plugins.yaml", f"""
        plugins:
          - name: temp-monitor
            git_url: https://git.example.org/bl/temp.git
            branch: main
            commit: {"a" * 40}
            path: plugins/temp
            parameters: {{interval: 1.5}}
            auto_start: false
          - name: private-one
            git_url: https://git.example.org/bl/private.git
            pat_file: {token}
          - name: iocmng-style
            git_url: https://git.example.org/bl/old.git
            pat: inline-token
          - name: bad.name
            git_url: https://git.example.org/x.git
          - name: two-sources
            git_url: https://git.example.org/x.git
            local_path: /opt/x
          - name: typo
            git_url: https://git.example.org/x.git
            paramters: {{a: 1}}
          - name: no-token
            git_url: https://git.example.org/x.git
            pat_file: {tmp_path / "missing"}
          - name: temp-monitor
            git_url: https://git.example.org/other.git
          - just a string
    """)
    declared = load_plugins_file(plugins)
    names = [r.name for r in declared.requests]
    assert names == ["temp-monitor", "private-one", "iocmng-style"]
    first = declared.requests[0]
    assert (first.source.git_url, first.source.branch, first.source.commit, first.source.path) == \
        ("https://git.example.org/bl/temp.git", "main", "a" * 40, "plugins/temp")
    assert first.parameters == {"interval": 1.5} and first.auto_start is False and not first.trusted
    assert declared.requests[1].pat == "s3cret" and declared.requests[2].pat == "inline-token"
    assert len(declared.warnings) == 1 and "plugins[2] (iocmng-style)" in declared.warnings[0]
    problems = "\n".join(declared.problems)
    assert len(declared.problems) == 6, problems
    for gist in ("plugins[3] (bad.name): name:", "plugins[4] (two-sources)",
                 "give exactly one of git_url or local_path",
                 "plugins[5] (typo): paramters: Extra inputs are not permitted",
                 f"plugins[6] (no-token): pat_file {tmp_path / 'missing'}: cannot be read",
                 "plugins[7] (temp-monitor): name 'temp-monitor' is declared twice",
                 "plugins[8]: an entry is a mapping"):
        assert gist in problems, (gist, problems)
    assert "s3cret" not in problems and "inline-token" not in problems
    # the left-out entries' names count as declared; the nameless string makes every name unsure
    assert declared.named == {"temp-monitor", "private-one", "iocmng-style", "bad.name", "two-sources", "typo",
                              "no-token"}
    assert declared.declared().names is None
    named = load_plugins_file(write(tmp_path / "named.yaml", "plugins:\n  - {name: a, git_url: x}\n"
                                                             "  - {name: b, colour: blue}\n"))
    assert [r.name for r in named.requests] == ["a"] and named.declared().names == {"a", "b"}


@pytest.mark.parametrize("text, gist", [
    ("plugins: [\n  {name: a\n", "line 3: not YAML"),
    ("- name: a\n", "expected a mapping with a `plugins:` list"),
    ("plugins: {name: a}\n", "expected a mapping with a `plugins:` list"),
])
def test_a_file_that_is_not_a_plugins_list_is_refused_whole(tmp_path: Path, text: str, gist: str) -> None:
    with pytest.raises(PluginsFileError, match=gist):
        load_plugins_file(write(tmp_path / "plugins.yaml", text))


@pytest.mark.slow
def test_the_daemon_refuses_to_start_without_its_declared_plugins(tmp_path: Path) -> None:
    """An unreadable file is a configuration error (exit 2), not an empty declaration."""
    result = subprocess.run(
        [sys.executable, "-m", "iochost", "serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "d"),
         "--plugins-file", str(tmp_path / "absent.yaml"), "--no-fork-server"],
        capture_output=True, text=True, timeout=60, env=daemon_environ())
    assert result.returncode == 2
    assert f"plugins file {tmp_path / 'absent.yaml'}: cannot be read" in result.stderr


# -- the daemon applying it --------------------------------------------------------------------------


@pytest.mark.slow
def test_declared_plugins_are_added_upgraded_and_rest_ones_stay(tmp_path: Path) -> None:
    repos = tmp_path / "repos"
    alpha = plugin_repo(repos, "alpha", TICKER, TICKER_CONFIG)
    first_commit = git(alpha.path, "rev-parse", "HEAD")
    alpha.write({"config.yaml": TICKER_CONFIG.replace("interval: 0.2", "interval: 0.3")})
    second_commit = alpha.commit("slower")
    beta = plugin_repo(repos, "beta", TICKER, TICKER_CONFIG, module="ticker")
    declared = tmp_path / "plugins.yaml"

    def declare(alpha_commit: str, alpha_interval: float) -> None:
        write(declared, f"""
            plugins:
              - name: alpha
                git_url: {alpha.url}
                commit: {alpha_commit}
                parameters: {{interval: {alpha_interval}}}
              - name: beta
                git_url: {beta.url}
              - name: gamma
                git_url: {alpha.url}
                colour: blue
              - name: delta
                git_url: {repos / "nowhere"}
        """)

    declare(first_commit, 0.25)
    data = tmp_path / "data"
    d = Daemon(data, "--plugins-file", str(declared))
    with d.serving():
        with d.client() as api:
            wait_until(lambda: api.get("/health/ready").status_code == 200, 60, what="declared plugins applied")
            plugins = {p["name"]: p for p in api.get("/plugins").json()["plugins"]}
            assert sorted(plugins) == ["alpha", "beta"]  # gamma's typo and delta's missing repo are left out
            assert plugins["alpha"]["source"]["commit"] == first_commit
            assert plugins["alpha"]["parameters"] == {"interval": 0.25}
            assert {p["state"] for p in plugins.values()} == {"running"}
            beta_created, alpha_created = plugins["beta"]["created_at"], plugins["alpha"]["created_at"]
            rest_added = api.post("/plugins", json={"name": "epsilon", "git_url": beta.url})
            assert rest_added.status_code == 201, rest_added.text
        log = d.log()
        assert "plugins[2] (gamma): colour: Extra inputs are not permitted; entry left out" in log
        assert "plugins file: delta (new) not applied: FETCH_FAILED" in log

    # the file changes: alpha to a new commit with new parameters; beta as it was
    declare(second_commit, 0.5)
    before = len(d.log())  # both daemons write one log file
    d2 = Daemon(data, env={"IOCMNG_PLUGINS_CONFIG": str(declared)})  # iocmng's variable, no flag
    with d2.serving():
        with d2.client() as api:
            wait_until(lambda: api.get("/health/ready").status_code == 200, 60, what="the upgrade")
            plugins = {p["name"]: p for p in api.get("/plugins").json()["plugins"]}
            assert sorted(plugins) == ["alpha", "beta", "epsilon"]  # the REST one stays
            assert plugins["alpha"]["source"]["commit"] == second_commit
            assert plugins["alpha"]["previous_commit"] == first_commit  # upgraded in place, not re-added
            assert plugins["alpha"]["created_at"] == alpha_created
            assert plugins["alpha"]["parameters"] == {"interval": 0.5}
            assert plugins["alpha"]["state"] == "running"
            assert plugins["beta"]["created_at"] == beta_created  # unchanged: not added again
        second_run = d2.log()[before:]
        assert "plugins file: alpha upgraded in place (revision, parameters)" in second_run
        assert "plugins file: beta" not in second_run



@contextlib.contextmanager
def ready(daemon: Daemon) -> Iterator[Any]:
    """The daemon serving, its plugins file applied (``/health/ready``)."""
    with daemon.serving(), daemon.client() as api:
        wait_until(lambda: api.get("/health/ready").status_code == 200, 120, what="the plugins file applied")
        yield api


@pytest.mark.slow
def test_a_mirror_or_a_name_take_over_keeps_the_plugin_and_a_plugin_leaving_the_file_is_kept_or_deleted(
        tmp_path: Path, processes: Processes) -> None:
    """alpha's URL changes to a mirror (same commit), omega (added over REST) is declared
    from another repository: both stay, upgraded in place, with the setpoints operators put
    over CA. Then omega leaves the file (kept: the operators' from then on), then alpha
    does with --plugins-file-removed delete (deleted, autosaved values too)."""
    repos = tmp_path / "repos"
    origin = plugin_repo(repos, "alpha", TICKER, TICKER_CONFIG, module="ticker")
    commit = git(origin.path, "rev-parse", "HEAD")
    git(repos, "clone", "-q", "--bare", str(origin.path), str(repos / "mirror.git"))
    mirror = (repos / "mirror.git").as_uri()
    other = plugin_repo(repos, "other", TICKER, TICKER_CONFIG.replace("interval: 0.2", "interval: 0.3"),
                        module="ticker")
    other_commit = git(other.path, "rev-parse", "HEAD")
    declared, data = tmp_path / "plugins.yaml", tmp_path / "data"

    def declare(*entries: str) -> None:
        write(declared, "plugins:\n" + "".join(f"  - {entry}\n" for entry in entries) if entries else "plugins: []\n")

    def epics() -> EpicsClient:  # a new client per daemon: no channel cached from the one before
        return EpicsClient(processes, tmp_path, dict(os.environ))

    declare(f"{{name: alpha, git_url: {origin.url}, commit: {commit}}}")
    with ready(Daemon(data, "--plugins-file", str(declared))) as api:
        added = api.post("/plugins", json={"name": "omega", "git_url": origin.url})
        assert added.status_code == 201, added.text
        client = epics()
        assert client.put({"IOCHT:ALPHA:GAIN": 7.5, "IOCHT:OMEGA:GAIN": 8.5}) == {
            "IOCHT:ALPHA:GAIN": True, "IOCHT:OMEGA:GAIN": True}
        client.close()
        before = {p["name"]: p for p in api.get("/plugins").json()["plugins"]}

    declare(f"{{name: alpha, git_url: {mirror}, commit: {commit}}}", f"{{name: omega, git_url: {other.url}}}")
    d = Daemon(data, "--plugins-file", str(declared))
    start = len(d.log())
    with ready(d) as api:
        plugins = {p["name"]: p for p in api.get("/plugins").json()["plugins"]}
        alpha, omega = plugins["alpha"], plugins["omega"]
        source = (alpha["source"]["git_url"], alpha["source"]["commit"], alpha["previous_commit"])
        assert source == (mirror, commit, None)
        assert alpha["state"] == "running" and alpha["created_at"] == before["alpha"]["created_at"]
        assert not [t for t in alpha["transitions"] if "upgrade" in t["reason"]], alpha["transitions"]  # not restarted
        assert (omega["source"]["git_url"], omega["source"]["commit"], omega["previous_commit"]) == (
            other.url, other_commit, commit)
        assert omega["state"] == "running" and omega["created_at"] == before["omega"]["created_at"]
        client = epics()
        assert client.get(["IOCHT:ALPHA:GAIN", "IOCHT:OMEGA:GAIN"], timeout=15) == {
            "IOCHT:ALPHA:GAIN": 7.5, "IOCHT:OMEGA:GAIN": 8.5}
        client.close()
        assert git(data / "plugins" / "alpha", "rev-parse", "HEAD") == commit  # one revision, the registered one
        assert list((data / "tmp").iterdir()) == []
    log = d.log()[start:]
    assert "plugins file: alpha upgraded in place (source)" in log
    assert "plugins file: omega upgraded in place (taken over: source)" in log
    assert "replaced" not in log

    declare(f"{{name: alpha, git_url: {mirror}, commit: {commit}}}")  # omega leaves the file: kept
    d = Daemon(data, "--plugins-file", str(declared))
    start = len(d.log())
    with ready(d) as api:
        assert sorted(p["name"] for p in api.get("/plugins").json()["plugins"]) == ["alpha", "omega"]
    assert "plugins file: omega left the file; kept" in d.log()[start:]

    declare()  # alpha leaves it too, and now they are deleted: alpha goes; omega is no longer the file's
    d = Daemon(data, "--plugins-file", str(declared), "--plugins-file-removed", "delete")
    start = len(d.log())
    with ready(d) as api:
        assert [p["name"] for p in api.get("/plugins").json()["plugins"]] == ["omega"]
    assert "plugins file: alpha left the file; deleted" in d.log()[start:]
    assert not (data / "autosave" / "alpha.json").exists() and not (data / "plugins" / "alpha").exists()
