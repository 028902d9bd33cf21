"""Security end to end against a real `iochost serve`: tokens, source policy, PAT secrecy,
bad input (stable codes, nothing left behind) and the rate limit of expensive operations.

The main daemon runs as in production: tokens from the environment, no local sources,
an allow-list holding only a made-up organisation and a local HTTP git server (git
http-backend behind Basic auth, which wants the PAT). Settings tried on daemons of their own
(token files, data dir, host, rate limits, command lines) are in test_security_settings.py.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import wait_for
from daemon_harness import Daemon, bearer, snapshot
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
@pytest.mark.slow
def test_no_token_is_401_everywhere_but_health(daemon: Daemon, anon: httpx.Client) -> None:
    checked = 0
    for method, path in operations(daemon):
        if path.startswith("/api/v1/health"):  # /health, /health/live, /health/ready: probes need no token
            assert anon.get(path.removeprefix("/api/v1")).status_code == 200
            continue
        if path == "/api/v1/access":  # what a token may do (the dashboard asks before anything else)
            for headers, role in (({}, "none"), (bearer(WRONG_TOKEN), "none"), (bearer(READ_TOKEN), "read"),
                                  (bearer(ADMIN_TOKEN), "admin")):
                assert anon.get("/access", headers=headers).json() == {"role": role, "tokens_required": True}
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
], ids=["none", "no-token", "cut-token", "basic", "token-scheme", "no-scheme"])  # ids without the session's tokens
def test_the_polled_list_refuses_every_bad_credential_as_the_api_does(anon: httpx.Client, authorization: str) -> None:
    """``GET /plugins`` is answered by a fast lane in front of FastAPI; whatever it cannot
    admit goes to FastAPI, whose 401 must come back exactly as on every other path."""
    for params in ({}, {"kind": "task"}):
        headers = {"Authorization": authorization} if authorization else {}
        response = anon.get("/plugins", params=params, headers=headers)
        assert response.status_code == 401, (authorization, params, response.text)
        assert response.json()["code"] == "UNAUTHORIZED" and response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("authorization", [f"Bearer {READ_TOKEN}", f"bearer {READ_TOKEN}", f"BEARER {ADMIN_TOKEN}",
                                           f"Bearer  {READ_TOKEN}"],  # FastAPI strips the token
                         ids=["read", "lower-case", "upper-case-admin", "two-spaces"])
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


@pytest.mark.slow
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
    # the add answered once running: its last transition is on the stream, or on its way
    wait_for(lambda: '"to_state":"running"' in "".join(tap.chunks).replace(" ", ""), 10,
             what="the add's transition to running on /events", sleep=time.sleep)
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

