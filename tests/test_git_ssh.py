"""Plugins from ssh:// git URLs, with the key and known hosts the chart's ``gitSshSecret`` gives.

A real OpenSSH server (Debian's ``sshd``, on 127.0.0.1 at a free port, its own host key, one
authorised client key) serves a plugin repository; the real daemon clones it with the very
``GIT_SSH_COMMAND`` the chart renders (its Secret's mount point replaced by the test's
directory), and the plugin runs. Without the key the add is refused with ssh's reason; with
a known_hosts that does not hold the server's key, too: the host key is checked, never
trusted on first sight.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from conftest import Processes, free_port, wait_for
from daemon_harness import Daemon, add, worker_pids
from gitrepos import plugin_repo
from sample_plugins import TICKER, TICKER_CONFIG
from test_chart import render  # the chart's own rendering, as tests/test_chart.py does it

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
pytestmark = pytest.mark.slow
CHART_SSH_DIR = "/run/secrets/git-ssh"


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def accepting(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def sshd(tmp_path: Path, processes: Processes) -> Iterator[tuple[int, Path]]:
    """(port, directory of the client's ssh-privatekey and known_hosts, as the Secret mounts them)."""
    if not Path(SSHD).exists():
        pytest.fail("sshd is missing: .ci/run installs openssh-server")
    server = tmp_path / "sshd"
    server.mkdir()
    host_key = keygen(server / "host_key")
    secret = tmp_path / "git-ssh"
    secret.mkdir()
    client_key = keygen(secret / "id")
    (secret / "id").rename(secret / "ssh-privatekey")
    (server / "authorized_keys").write_text(client_key + "\n")
    port = free_port()
    (secret / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    (server / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {server / 'host_key'}\n"
        f"AuthorizedKeysFile {server / 'authorized_keys'}\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n"
        f"PermitRootLogin prohibit-password\nAllowUsers {getpass.getuser()}\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege-separation directory
    log = open(tmp_path / "sshd.log", "wb")
    proc = processes.start([SSHD, "-D", "-e", "-f", str(server / "sshd_config")], stdout=log, stderr=log)
    wait_for(lambda: accepting(port) or proc.poll() is not None, timeout=20, what="sshd listening", sleep=time.sleep)
    assert proc.poll() is None, (tmp_path / "sshd.log").read_text()
    yield port, secret


def chart_ssh_command(secret: Path) -> str:
    """The GIT_SSH_COMMAND the chart gives the daemon, pointed at ``secret`` instead of its mount."""
    env = {e["name"]: e.get("value") for e in render({"gitSshSecret": "git-ssh"}).container["env"]}
    assert CHART_SSH_DIR in env["GIT_SSH_COMMAND"]
    return env["GIT_SSH_COMMAND"].replace(CHART_SSH_DIR, str(secret))


def test_a_plugin_is_cloned_over_ssh_with_the_charts_key_and_known_hosts(
        sshd: tuple[int, Path], tmp_path: Path) -> None:
    port, secret = sshd
    repo = plugin_repo(tmp_path / "repos", "sshticker", TICKER, TICKER_CONFIG, module="ticker")
    url = f"ssh://{getpass.getuser()}@127.0.0.1:{port}{repo.path}"
    daemon = Daemon(tmp_path / "data", env={"GIT_SSH_COMMAND": chart_ssh_command(secret)}, local_sources=False)
    try:
        daemon.start()
        with daemon.client() as api:
            record = add(api, "sshticker", repo, git_url=url)
            assert record["git_url"] == url
            wait_for(lambda: api.get("/plugins/sshticker").json()["state"] == "running", timeout=60,
                     what="the ssh-cloned plugin running", sleep=time.sleep)
        assert daemon.terminate() == 0
    finally:
        daemon.cleanup()
        assert worker_pids(daemon.data_dir) == []


@pytest.mark.parametrize("broken", ["no key", "changed host key", "unknown host"])
def test_without_the_key_or_the_host_key_the_add_is_refused_with_ssh_s_reason(
        sshd: tuple[int, Path], tmp_path: Path, broken: str) -> None:
    port, secret = sshd
    if broken == "no key":
        (secret / "ssh-privatekey").unlink()
        reason = "Permission denied (publickey)"
    elif broken == "unknown host":
        (secret / "known_hosts").write_text("")
        reason = (f"its host key is not in known_hosts, or is not the one there (ssh: No ED25519 host key is known "
                  f"for [127.0.0.1]:{port} and you have requested strict checking.)")
    else:
        (secret / "known_hosts").write_text(f"[127.0.0.1]:{port} {keygen(tmp_path / 'other')}\n")
        reason = (f"its host key is not in known_hosts, or is not the one there (ssh: Host key for [127.0.0.1]:{port} "
                  "has changed and you have requested strict checking.)")
    repo = plugin_repo(tmp_path / "repos", "sshticker", TICKER, TICKER_CONFIG, module="ticker")
    daemon = Daemon(tmp_path / "data", env={"GIT_SSH_COMMAND": chart_ssh_command(secret)}, local_sources=False)
    try:
        daemon.start()
        with daemon.client() as api:
            answer = api.post("/plugins", json={"name": "sshticker",
                                                "git_url": f"ssh://{getpass.getuser()}@127.0.0.1:{port}{repo.path}"})
            assert answer.status_code >= 400, answer.text
            assert reason in answer.text, answer.text
            assert api.get("/plugins/sshticker").status_code == 404
        assert daemon.terminate() == 0
    finally:
        daemon.cleanup()
