"""The plugins file (--plugins-file, IOCMNG_PLUGINS_CONFIG): plugins declared for GitOps."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import daemon_environ, free_port
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
    for gist in ("plugins[3] (bad.name): name:", "plugins[4] (two-sources)", "give exactly one of git_url or local_path",
                 "plugins[5] (typo): paramters: Extra inputs are not permitted",
                 f"plugins[6] (no-token): pat_file {tmp_path / 'missing'}: cannot be read",
                 "plugins[7] (temp-monitor): name 'temp-monitor' is declared twice",
                 "plugins[8]: an entry is a mapping"):
        assert gist in problems, (gist, problems)
    assert "s3cret" not in problems and "inline-token" not in problems


@pytest.mark.parametrize("text, gist", [
    ("plugins: [\n  {name: a\n", "line 3: not YAML"),
    ("- name: a\n", "expected a mapping with a `plugins:` list"),
    ("plugins: {name: a}\n", "expected a mapping with a `plugins:` list"),
])
def test_a_file_that_is_not_a_plugins_list_is_refused_whole(tmp_path: Path, text: str, gist: str) -> None:
    with pytest.raises(PluginsFileError, match=gist):
        load_plugins_file(write(tmp_path / "plugins.yaml", text))


def test_the_daemon_refuses_to_start_without_its_declared_plugins(tmp_path: Path) -> None:
    """An unreadable file is a configuration error (exit 2), not an empty declaration."""
    result = subprocess.run(
        [sys.executable, "-m", "iochost", "serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "d"),
         "--plugins-file", str(tmp_path / "absent.yaml"), "--no-fork-server"],
        capture_output=True, text=True, timeout=60, env=daemon_environ())
    assert result.returncode == 2
    assert f"plugins file {tmp_path / 'absent.yaml'}: cannot be read" in result.stderr


# -- the daemon applying it --------------------------------------------------------------------------


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

