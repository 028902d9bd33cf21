"""Security end to end against a real `iochost serve`: tokens, source policy, PAT secrecy,
bad input (stable codes, nothing left behind) and the rate limit of expensive operations.

The main daemon runs as in production: tokens from the environment, no local sources,
an allow-list holding only a made-up organisation and a local HTTP git server (git
http-backend behind Basic auth, which wants the PAT).
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import daemon_environ, free_port, wait_for
from daemon_harness import Daemon, bearer, live_processes, snapshot
from githttp import GitServer, publish
from gitrepos import Repo
from sample_plugins import TICKER as SAMPLE_TICKER

READ_TOKEN = "rd-" + secrets.token_hex(20)
ADMIN_TOKEN = "ad-" + secrets.token_hex(20)
PAT = "ghp_" + secrets.token_hex(20)
WRONG_TOKEN = "wrong-" + secrets.token_hex(20)
ALLOWED = "https://example.invalid/org/"

# Plugin code (the validation probe imports it, then the worker) never sees an API token.
TICKER = """
    import os
    assert not {"IOCHOST_READ_TOKEN", "IOCHOST_ADMIN_TOKEN"} & set(os.environ), "token in plugin env"
""" + SAMPLE_TICKER
TICKER_CONFIG = "parameters: {interval: 0.2}\npvs:\n  outputs:\n    VALUE: {type: int, value: 0}\n"


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    """Serves ticker.git (a valid plugin) and escape.git (a symlink out of the repository)."""
    root = tmp_path_factory.mktemp("gitsrv")
    served = root / "served"
    served.mkdir()
    ticker = Repo(root / "ticker").write({"ticker.py": TICKER, "config.yaml": TICKER_CONFIG})
    ticker.commit("plugin")
    publish(served, ticker.path, "ticker.git")
    escape = Repo(root / "escape").write({"ticker.py": TICKER, "config.yaml": TICKER_CONFIG})
    (escape.path / "secrets").symlink_to("/etc")
    escape.commit("a link out")
    publish(served, escape.path, "escape.git")
    server = GitServer(served, PAT)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, git_server: GitServer) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("secured")
    git_prefix = git_server.url("")
    d = Daemon(root / "data", "--allow-source", ALLOWED, "--allow-source", git_prefix,
               "--add-rate", "off", "--max-body-bytes", "65536", "--log-level", "debug",
               env={"IOCHOST_READ_TOKEN": READ_TOKEN, "IOCHOST_ADMIN_TOKEN": ADMIN_TOKEN},
               local_sources=False)
    with d.serving():
        yield d


@pytest.fixture(scope="module")
def admin(daemon: Daemon) -> Iterator[httpx.Client]:
    with daemon.client(timeout=90, token=ADMIN_TOKEN) as client:
        yield client


@pytest.fixture(scope="module")
def reader(daemon: Daemon) -> Iterator[httpx.Client]:
    with daemon.client(timeout=30, token=READ_TOKEN) as client:
        yield client


@pytest.fixture(scope="module")
def anon(daemon: Daemon) -> Iterator[httpx.Client]:
    with daemon.client(timeout=30) as client:
        yield client


def operations(daemon: Daemon) -> list[tuple[str, str]]:
    """Every operation of the running daemon's own OpenAPI schema, path parameters filled."""
    schema = httpx.get(daemon.url + "/openapi.json", timeout=10).json()
    ops = []
    for path, item in schema["paths"].items():
        for method in item:
            ops.append((method.upper(), re.sub(r"\{[^}]+\}", "nobody", path)))
    assert len(ops) >= 15, ops
    return ops


def url_of(client: httpx.Client, path: str) -> str:
    """A schema path as ``client`` (based at /api/v1) requests it; /metrics is at the root."""
    if path.startswith("/api/v1/"):
        return path.removeprefix("/api/v1")
    return str(client.base_url.copy_with(path=path))


def call(client: httpx.Client, method: str, path: str) -> int:
    """Status of one request; a stream (/events) is closed after its status line."""
    url = url_of(client, path)
    kwargs: dict[str, Any] = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    with client.stream(method, url, **kwargs) as response:
        return response.status_code


# -- who may do what ------------------------------------------------------------------------------
def test_no_token_is_401_everywhere_but_health(daemon: Daemon, anon: httpx.Client) -> None:
    checked = 0
    for method, path in operations(daemon):
        if path.startswith("/api/v1/health"):  # /health, /health/live, /health/ready: probes need no token
            assert anon.get(path.removeprefix("/api/v1")).status_code == 200
            continue
        for headers in ({}, bearer(WRONG_TOKEN), {"Authorization": f"Basic {ADMIN_TOKEN}"}):
            url = url_of(anon, path)
            response = anon.request(method, url, headers=headers, json={} if method == "POST" else None)
            assert response.status_code == 401, (method, path, headers, response.text)
            body = response.json()
            assert body["code"] == "UNAUTHORIZED" and response.headers["www-authenticate"] == "Bearer"
            checked += 1
    assert checked >= 40


@pytest.mark.parametrize("authorization", [
    "", "Bearer", f"Bearer {READ_TOKEN[:-1]}", f"Basic {READ_TOKEN}",
    f"Token {ADMIN_TOKEN}", f"{READ_TOKEN}",
])
def test_the_polled_list_refuses_every_bad_credential_as_the_api_does(anon: httpx.Client, authorization: str) -> None:
    """``GET /plugins`` is answered by a fast lane in front of FastAPI; whatever it cannot
    admit goes to FastAPI, whose 401 must come back exactly as on every other path."""
    for params in ({}, {"kind": "task"}):
        response = anon.get("/plugins", params=params, headers={"Authorization": authorization} if authorization else {})
        assert response.status_code == 401, (authorization, params, response.text)
        assert response.json()["code"] == "UNAUTHORIZED" and response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("authorization", [f"Bearer {READ_TOKEN}", f"bearer {READ_TOKEN}", f"BEARER {ADMIN_TOKEN}",
                                           f"Bearer  {READ_TOKEN}"])  # FastAPI strips the token
def test_the_polled_list_admits_what_the_api_admits(anon: httpx.Client, authorization: str) -> None:
    response = anon.get("/plugins", headers={"Authorization": authorization})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == anon.get("/plugins", params={"kind": "task"},
                                       headers={"Authorization": authorization}).json()


def test_read_token_may_look_not_touch(daemon: Daemon, reader: httpx.Client) -> None:
    for method, path in operations(daemon):
        status = call(reader, method, path)
        if method == "GET":
            assert status in (200, 404), (method, path, status)
        elif (method, path) == ("POST", "/api/v1/pvs/get"):  # a read on iocmng's POST path: past the token, {} is 422
            assert status == 422, (method, path, status)
        else:
            assert status == 403, (method, path, status)
    refused = reader.post("/plugins", json={"name": "x", "git_url": ALLOWED + "x.git"})
    assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN"
    assert "admin token" in refused.json()["message"]
    assert reader.get("/plugins").json()["count"] == 0


def test_admin_token_may_do_everything(daemon: Daemon, admin: httpx.Client) -> None:
    for method, path in operations(daemon):
        status = call(admin, method, path)
        assert status not in (401, 403) and status < 500, (method, path, status)


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


# -- source policy ---------------------------------------------------------------------------------
@pytest.mark.parametrize("source, field, gist", [
    ({"git_url": "file:///srv/git/plugin.git"}, "git_url", "--allow-local-sources"),
    ({"git_url": "/srv/git/plugin.git"}, "git_url", "--allow-local-sources"),
    ({"local_path": "/srv/plugins/mine"}, "local_path", "--allow-local-sources"),
    ({"git_url": "https://github.com/someone/plugin.git"}, "git_url", "not under an allowed source prefix"),
    ({"git_url": "https://example.invalid/org-evil/plugin.git"}, "git_url", "not under an allowed source"),
    ({"git_url": "https://example.invalid.evil.example/org/plugin.git"}, "git_url", "not under an allowed"),
    ({"git_url": "https://example.invalid:8443/org/plugin.git"}, "git_url", "not under an allowed source"),
    ({"git_url": "http://example.invalid/org/plugin.git"}, "git_url", "not under an allowed source prefix"),
    ({"git_url": "ext::sh -c touch% /tmp/pwned"}, "git_url", "not allowed"),
    ({"git_url": "git@github.com:org/plugin.git"}, "git_url", "not under an allowed source prefix"),
])
def test_source_policy(daemon: Daemon, admin: httpx.Client, tmp_path: Path, source: dict[str, str],
                       field: str, gist: str) -> None:
    repo = Repo(tmp_path / "local").write({"ticker.py": TICKER, "config.yaml": TICKER_CONFIG})
    repo.commit()
    source = {k: v.replace("/srv/git/plugin.git", str(repo.path)).replace("/srv/plugins/mine", str(repo.path))
              for k, v in source.items()}  # a real, valid plugin: only the policy stands in the way
    before = snapshot(daemon)
    response = admin.post("/plugins", json={"name": "refused", **source})
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["code"] == "SOURCE_NOT_ALLOWED" and body["field"] == field and gist in body["message"]
    assert snapshot(daemon) == before
    assert admin.get("/plugins/refused").status_code == 404


# -- the PAT --------------------------------------------------------------------------------------
class Sampler(threading.Thread):
    """Reads every process's command line in a loop while the add runs."""

    def __init__(self, secret: str, marker: str) -> None:
        super().__init__(daemon=True)
        self.secret, self.marker = secret.encode(), marker.encode()
        self.leaks: list[bytes] = []
        self.saw_git = False
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        line = (entry / "cmdline").read_bytes()
                    except OSError:
                        continue
                    if self.secret in line:
                        self.leaks.append(line)
                    if self.marker in line and b"clone" in line:
                        self.saw_git = True


class EventTap(threading.Thread):
    """Collects the raw /events stream."""

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(daemon=True)
        self.url = daemon.url + "/api/v1/events"
        self.chunks: list[str] = []
        self.connected = threading.Event()
        self.response: httpx.Response | None = None

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=bearer(READ_TOKEN), timeout=None) as response:
                self.response = response
                self.connected.set()
                for chunk in response.iter_text():
                    self.chunks.append(chunk)
        except (httpx.HTTPError, RuntimeError, AttributeError):
            pass  # closed from the test thread

    def close(self) -> str:
        if self.response is not None:
            self.response.close()
        self.join(5)
        return "".join(self.chunks)


def test_pat_never_leaks(daemon: Daemon, admin: httpx.Client, reader: httpx.Client, git_server: GitServer) -> None:
    url = git_server.url("ticker.git")
    refused = admin.post("/plugins", json={"name": "private", "git_url": url, "pat": WRONG_TOKEN})
    assert refused.status_code == 502 and refused.json()["code"] == "FETCH_FAILED"
    assert "authentication refused" in refused.json()["message"] and WRONG_TOKEN not in refused.text
    missing = admin.post("/plugins", json={"name": "private", "git_url": url})
    assert missing.status_code == 502 and "authentication refused" in missing.json()["message"]

    git_server.pack_delay = 0.5  # keep git alive long enough to be seen by the sampler
    tap = EventTap(daemon)
    tap.start()
    assert tap.connected.wait(10)
    sampler = Sampler(PAT, url)
    sampler.start()
    try:
        added = admin.post("/plugins", json={"name": "private", "git_url": url, "pat": PAT})
    finally:
        sampler.done.set()
        sampler.join()
        git_server.pack_delay = 0.0
    assert added.status_code == 201, added.text
    assert sampler.saw_git, "the sampler never saw git running; it proves nothing"
    assert sampler.leaks == []
    assert set(git_server.usernames) == {"x-access-token"}  # the PAT really was sent, as Basic auth
    record = added.json()
    assert record["state"] == "running" and record["source"]["git_url"] == url

    responses = [added.text]
    for path in ("/plugins", "/plugins/private", "/plugins/private/logs", "/tasks", "/health"):
        response = reader.get(path)
        assert response.status_code == 200
        responses.append(response.text)
    time.sleep(0.5)
    events = tap.close()
    assert '"plugin":"private"' in events.replace(" ", "")  # the tap did see the add
    responses.append(events)
    for text in responses:
        assert PAT not in text

    data = daemon.data_dir
    config = (data / "plugins" / "private" / ".git" / "config").read_text()
    assert url in config and PAT not in config
    scanned = 0
    for path in data.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert PAT.encode() not in path.read_bytes(), path
            scanned += 1
    assert scanned > 10 and (data / "registry.json").is_file() and (data / "logs" / "private.log").is_file()
    assert PAT not in daemon.log()
    environ = Path(f"/proc/{record['pid']}/environ").read_bytes()
    for secret in (PAT, ADMIN_TOKEN, READ_TOKEN):  # what plugin code could read of its environment
        assert secret.encode() not in environ
    assert admin.delete("/plugins/private").status_code == 200


# -- bad input ------------------------------------------------------------------------------------
LONG = "x" * 5000


@pytest.mark.parametrize("body, field", [
    ({"name": "ok", "git_url": ALLOWED + "p.git", "colour": "red"}, "colour"),
    ({"name": 123, "git_url": ALLOWED + "p.git"}, "name"),
    ({"name": "ok", "git_url": ALLOWED + "p.git", "auto_start": "maybe"}, "auto_start"),
    ({"name": "ok", "git_url": ALLOWED + "p.git", "parameters": ["a"]}, "parameters"),
    ({"name": "ok", "git_url": ALLOWED + "p.git", "grace_period": "soon"}, "grace_period"),
    ({"name": "ok", "git_url": ALLOWED + "p.git", "grace_period": -1}, "grace_period"),
    ({"name": "ok", "git_url": ["a"]}, "git_url"),
    ({"name": "ok", "git_url": ALLOWED + LONG}, "git_url"),
    ({"name": "ok", "local_path": "/" + LONG}, "local_path"),
    ({"name": "ok", "git_url": ALLOWED + "p.git", "branch": LONG}, "branch"),
    ({"name": "ok", "git_url": ALLOWED + "p.git", "path": LONG}, "path"),
    ({"name": "ok", "git_url": ALLOWED + "p.git", "pat": LONG}, "pat"),
    ({"name": "ok", "git_url": ALLOWED + "p.git", "class_name": "C" * 200}, "class_name"),
    ({"name": "ok", "git_url": ALLOWED + "p.git", "commit": "HEAD~1"}, "commit"),
    ({"name": "x" * 41, "git_url": ALLOWED + "p.git"}, "name"),
    ({"name": "bad name!", "git_url": ALLOWED + "p.git"}, "name"),
    ({"name": "../escape", "git_url": ALLOWED + "p.git"}, "name"),
    ({"name": "", "git_url": ALLOWED + "p.git"}, "name"),
    ({"git_url": ALLOWED + "p.git"}, "name"),
])
def test_invalid_body_names_the_field(daemon: Daemon, admin: httpx.Client, body: dict[str, Any], field: str) -> None:
    before = snapshot(daemon)
    response = admin.post("/plugins", json=body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["code"] == "INVALID_REQUEST"
    assert field in [error["field"] for error in answer["errors"]], answer
    assert field in answer["message"]
    assert LONG not in response.text  # the offending value is not echoed back in full
    assert snapshot(daemon) == before


@pytest.mark.parametrize("content", [b"{not json", b"", b"[]", b'"name"', b'{"name": "ok",}', b"\xff\xfe"])
def test_malformed_json(daemon: Daemon, admin: httpx.Client, content: bytes) -> None:
    before = snapshot(daemon)
    response = admin.post("/plugins", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "INVALID_REQUEST"
    assert snapshot(daemon) == before


@pytest.mark.parametrize("repo, path, gist", [
    ("ticker.git", "../outside", "must not contain '..'"),
    ("ticker.git", "sub/../../outside", "must not contain '..'"),
    ("ticker.git", "/etc", "must be relative"),
    ("escape.git", None, "secrets is a symlink pointing outside the repository"),
    ("escape.git", "secrets", "resolves outside the repository"),
])
def test_path_escaping_the_repository(daemon: Daemon, admin: httpx.Client, git_server: GitServer,
                                      repo: str, path: str | None, gist: str) -> None:
    before = snapshot(daemon)
    body: dict[str, Any] = {"name": "escaper", "git_url": git_server.url(repo), "pat": PAT}
    if path is not None:
        body["path"] = path
    response = admin.post("/plugins", json=body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["code"] == "INVALID_REQUEST" and answer["field"] == "path" and gist in answer["message"]
    assert snapshot(daemon) == before
    assert list((daemon.data_dir / "tmp").iterdir()) == []  # the clone that had the link is gone


def test_body_over_the_limit(daemon: Daemon, admin: httpx.Client) -> None:
    before = snapshot(daemon)
    big = {"name": "big", "git_url": ALLOWED + "p.git", "parameters": {"blob": "x" * 70_000}}
    response = admin.post("/plugins", json=big)
    assert response.status_code == 413 and response.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert "65536" in response.json()["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold on the stream too
        yield b'{"name": "big", "git_url": "' + ALLOWED.encode() + b'p.git", "parameters": {"blob": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}}'

    streamed = admin.post("/plugins", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert admin.get("/health").status_code == 200
    assert snapshot(daemon) == before


def test_tokens_never_logged(daemon: Daemon, anon: httpx.Client) -> None:
    """Runs last in this module: by now every endpoint was called with every token, wrong and
    right; the daemon log (at debug level) and the worker logs hold none of them."""
    anon.get("/plugins", headers=bearer(WRONG_TOKEN))
    anon.get("/plugins", headers=bearer(ADMIN_TOKEN[:-1]))
    anon.post("/plugins", headers=bearer(READ_TOKEN), json={"name": "x", "local_path": "/x"})
    assert "no API token configured" not in daemon.log()
    logs = daemon.log()
    assert '"level": "debug"' in logs  # debug lines really are written
    for path in daemon.data_dir.rglob("*"):
        if path.is_file():
            logs += path.read_text(errors="replace")
    for token in (READ_TOKEN, ADMIN_TOKEN, WRONG_TOKEN, ADMIN_TOKEN[:-1]):
        assert token not in logs
    assert daemon.proc is not None
    assert ADMIN_TOKEN.encode() not in Path(f"/proc/{daemon.proc.pid}/cmdline").read_bytes()


# -- rate limit -----------------------------------------------------------------------------------
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


# Its import waits for the test's go-ahead, so the validation probe is alive to be looked at.
GATED_TICKER = """\
    import pathlib
    import time

    from iochost import TaskBase

    GATE = pathlib.Path({gate!r})
    (GATE / "importing").touch()
    while not (GATE / "go").exists():
        time.sleep(0.05)


    class Ticker(TaskBase):
        def initialize(self):
            pass

        def execute(self):
            pass

        def cleanup(self):
            pass
"""


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


@pytest.mark.parametrize("fork_server", [False, True], ids=["spawned-probe", "forked-probe"])
def test_parameters_never_show_on_a_command_line(tmp_path: Path, fork_server: bool) -> None:
    """Any local user can read every process's command line (``ps -ef``): the validation
    probe and the worker get a plugin's parameters (which may hold credentials) from a
    0600 file, never from their arguments."""
    from gitrepos import plugin_repo

    gate = tmp_path / "gate"
    gate.mkdir()
    repo = plugin_repo(tmp_path, "gated", GATED_TICKER.format(gate=str(gate)), "parameters: {interval: 0.5}\n")
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
            if not fork_server:  # a fresh interpreter: ``python -m iochost.validate.probe REQUEST_FILE``
                assert any("iochost.validate.probe" in line for line in probing.values()), probing
            assert not [line for line in probing.values() if secret in line], probing
        finally:
            (gate / "go").touch()
            adding.join(120)
        assert answer["add"].status_code == 201, answer["add"].text
        running = _cmdlines_below(daemon.proc.pid)
        assert not [line for line in running.values() if secret in line], running
