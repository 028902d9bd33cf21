"""Security settings, each on a daemon of its own: token files (empty, unreadable), an unusable data dir, a non-
loopback host without a token, rate limits per client and per token, the token bucket, and parameters that never
show on a command line.

The tests sharing one daemon (tokens, source policy, PAT secrecy, bad input) are in test_security.py.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import daemon_environ, free_port, wait_for
from daemon_harness import Daemon, bearer, live_processes
from sample_plugins import gated_ticker
from test_security import ADMIN_TOKEN, READ_TOKEN


def test_token_files(tmp_path: Path) -> None:
    read_file, admin_file = tmp_path / "read-token", tmp_path / "admin-token"
    read_token, admin_token = "file-rd-" + secrets.token_hex(16), "file-ad-" + secrets.token_hex(16)
    for path, token in ((read_file, read_token), (admin_file, admin_token)):
        path.write_text(token + "\n")  # a trailing newline, as `kubectl create secret` files have
        path.chmod(0o600)
    d = Daemon(tmp_path / "data", "--read-token-file", str(read_file), "--admin-token-file", str(admin_file),
               local_sources=False)
    try:
        d.start()
        with d.client(timeout=30) as client:
            assert client.get("/plugins").status_code == 401
            assert client.get("/plugins", headers=bearer(read_token)).status_code == 200
            assert client.post("/plugins/x/start", headers=bearer(read_token)).status_code == 403
            admin_try = client.post("/plugins/x/start", headers=bearer(admin_token))
            assert admin_try.status_code == 404 and admin_try.json()["code"] == "PLUGIN_NOT_FOUND"
        assert "no API token configured" not in d.log()
        assert d.proc is not None
        cmdline = Path(f"/proc/{d.proc.pid}/cmdline").read_bytes()
        assert str(admin_file).encode() in cmdline  # the file's path is on the command line ...
        assert admin_token.encode() not in cmdline and read_token.encode() not in cmdline  # ... never the token
        assert d.terminate() == 0
        for token in (read_token, admin_token):
            assert token not in d.log()
    finally:
        d.cleanup()


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "admin-token"
    empty.write_text("\n")
    result = subprocess.run(
        [sys.executable, "-m", "iochost", "serve", "--admin-token-file", str(empty), "--port", str(free_port()),
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60, env=_env_without_tokens(),
    )
    assert result.returncode == 2 and "is empty" in result.stderr


def test_unreadable_token_file_is_refused_naming_the_setting(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "iochost", "serve", "--admin-token-file", str(tmp_path), "--port", str(free_port()),
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60, env=_env_without_tokens(),
    )
    assert result.returncode == 2
    assert f"admin_token_file {tmp_path} cannot be read" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("spoil, gist", [
    ("file-in-the-way", "cannot create or write"),
    ("corrupt-registry", "registry file"),
])
def test_an_unusable_data_dir_is_refused_in_one_line_before_anything_starts(
        tmp_path: Path, spoil: str, gist: str) -> None:
    """As a volume mounted without the daemon's user as owner would be: exit 2, one line."""
    data = tmp_path / "data"
    if spoil == "file-in-the-way":
        (tmp_path / "blocker").write_text("")
        data = tmp_path / "blocker" / "data"
    else:
        data.mkdir()
        (data / "registry.json").write_text("{not json")
    result = subprocess.run(
        [sys.executable, "-m", "iochost", "serve", "--port", str(free_port()), "--data-dir", str(data)],
        capture_output=True, text=True, timeout=60, env=_env_without_tokens(),
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"iochost serve: data_dir {data}: ") and gist in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _env_without_tokens() -> dict[str, str]:
    return {k: v for k, v in daemon_environ().items() if not k.startswith("IOCHOST_")}


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_non_loopback_host_without_token_is_refused(tmp_path: Path, host: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "iochost", "serve", "--host", host, "--port", str(free_port()),
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60, env=_env_without_tokens(),
    )
    assert result.returncode == 2
    assert f"refusing to listen on {host} without a token" in result.stderr
    assert "IOCHOST_ADMIN_TOKEN" in result.stderr  # says how to fix it
    assert not (tmp_path / "data").exists()  # refused before doing anything


# -- rate limit -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_rate_limit_per_client_without_tokens(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data", "--add-rate", "3/9", env={"IOCHOST_READ_TOKEN": "", "IOCHOST_ADMIN_TOKEN": ""})
    try:
        d.start()
        assert "no API token configured" in d.log() and "loopback" in d.log()
        with d.client(timeout=30) as client:
            # Expensive operations spend the budget whatever their outcome ...
            statuses = [client.post("/plugins/nobody/restart").status_code,
                        client.post("/plugins/nobody/start").status_code,
                        client.post("/tasks", json={"name": "n", "local_path": "/nonexistent"}).status_code]
            assert statuses == [404, 404, 502]
            for attempt in (client.post("/plugins", json={"name": "n", "local_path": "/nonexistent"}),
                            client.post("/jobs", json={}), client.post("/plugins/nobody/restart")):
                assert attempt.status_code == 429, attempt.text
                body = attempt.json()
                assert body["code"] == "RATE_LIMITED" and "at most 3 per 9 s" in body["message"]
                retry = int(attempt.headers["retry-after"])
                assert 1 <= retry <= 3 and body["retry_after"] == retry
            # ... cheap ones do not, and are never limited.
            for _ in range(10):
                assert client.get("/plugins").status_code == 200
                assert client.post("/plugins/nobody/stop").status_code == 404
            # Another client address has its own bucket.
            other = httpx.HTTPTransport(local_address="127.0.0.2")
            with httpx.Client(base_url=d.url + "/api/v1", transport=other, timeout=30) as neighbour:
                assert neighbour.post("/plugins/nobody/restart").status_code == 404
            assert client.post("/plugins/nobody/restart").status_code == 429
            # The bucket refills: one operation every 3 s.
            time.sleep(retry + 0.2)
            assert client.post("/plugins/nobody/restart").status_code == 404
            assert client.post("/plugins/nobody/restart").status_code == 429
    finally:
        d.cleanup()


def test_rate_limit_per_token(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data", "--add-rate", "2/60", env={"IOCHOST_ADMIN_TOKEN": ADMIN_TOKEN,
                                                            "IOCHOST_READ_TOKEN": READ_TOKEN})
    try:
        d.start()
        with d.client(timeout=30) as client:
            for _ in range(5):  # refused requests spend nothing from the admin's budget
                assert client.post("/plugins/x/restart").status_code == 401
                assert client.post("/plugins/x/restart", headers=bearer(READ_TOKEN)).status_code == 403
            assert [client.post("/plugins/x/restart", headers=bearer(ADMIN_TOKEN)).status_code
                    for _ in range(3)] == [404, 404, 429]
    finally:
        d.cleanup()


def test_token_bucket_arithmetic() -> None:
    """The limiter itself, on a fake clock: capacity, refill rate, wait times, idle eviction."""
    import iochost.api.ratelimit as ratelimit

    now = [1000.0]
    limiter = ratelimit.RateLimiter(2, 10.0, clock=lambda: now[0])
    assert [limiter.check("a"), limiter.check("a")] == [0.0, 0.0]
    assert limiter.check("a") == pytest.approx(5.0)  # one token per 5 s
    assert limiter.check("b") == 0.0  # another caller, another bucket
    now[0] += 2.5
    assert limiter.check("a") == pytest.approx(2.5)
    now[0] += 2.5
    assert limiter.check("a") == 0.0 and limiter.check("a") == pytest.approx(5.0)
    now[0] += 60
    assert [limiter.check("a"), limiter.check("a"), limiter.check("a") > 0] == [0.0, 0.0, True]  # capped at 2
    original = ratelimit.MAX_BUCKETS
    ratelimit.MAX_BUCKETS = 3
    try:
        now[0] += 60  # every bucket is full again: idle callers are forgotten when the table is full
        for caller in ("c", "d", "e"):
            limiter.check(caller)
        assert len(limiter.buckets) <= 3
    finally:
        ratelimit.MAX_BUCKETS = original


def _cmdlines_below(pid: int) -> dict[int, str]:
    """The command line of every process below ``pid`` (this test's daemon), by pid."""
    table = live_processes()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            found[child] = table[child][1].replace(b"\0", b" ").decode(errors="replace")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("fork_server", [False, True], ids=["spawned-probe", "forked-probe"])
def test_parameters_never_show_on_a_command_line(tmp_path: Path, fork_server: bool) -> None:
    """Any local user can read every process's command line (``ps -ef``): the validation
    probe and the worker get a plugin's parameters (which may hold credentials) from a
    0600 file, never from their arguments."""
    from gitrepos import plugin_repo

    gate = tmp_path / "gate"
    repo = plugin_repo(tmp_path, "gated", gated_ticker(gate), "parameters: {interval: 0.5}\n")
    secret = f"pw-{secrets.token_hex(8)}"
    daemon = Daemon(tmp_path / "data", *([] if fork_server else ["--no-fork-server"]))
    with daemon.serving(), daemon.client() as api:
        answer: dict[str, httpx.Response] = {}
        adding = threading.Thread(target=lambda: answer.setdefault("add", api.post(
            "/plugins", json={"name": "gated", "git_url": repo.url, "parameters": {"password": secret}})))
        adding.start()
        try:
            wait_for(lambda: (gate / "importing").exists(), 60, what="the probe importing the plugin")
            probing = _cmdlines_below(daemon.proc.pid)
            if not fork_server:  # a fresh interpreter: ``python -m iochost.worker.probe REQUEST_FILE``
                assert any("iochost.worker.probe" in line for line in probing.values()), probing
            assert not [line for line in probing.values() if secret in line], probing
        finally:
            (gate / "go").touch()
            adding.join(120)
        assert answer["add"].status_code == 201, answer["add"].text
        running = _cmdlines_below(daemon.proc.pid)
        assert not [line for line in running.values() if secret in line], running

