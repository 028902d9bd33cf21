"""The git store's fetches against real git repositories: clones of branches, tags and
commits, refused paths and symlinks, size limits, PAT secrecy, timeouts. Checkouts (local
paths, restore, upgrades) are in test_store_checkouts.py, which uses the helpers here;
the registry and the source policy in test_store_registry.py.

Repositories are made with the `git` CLI in tmp_path and cloned by `file://` URL, or over
HTTP from a tiny in-test server that runs the real `git http-backend` behind Basic auth
(for the PAT), stalls mid-pack (for the size watcher) or never answers (for the timeout).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from githttp import GitServer
from iochost.errors import ErrorCode, IochostError
from iochost.store import (
    GitStore,
    PluginSource,
    Registry,
    RegistryEntry,
)
from iochost.store.entries import FetchResult

GIT_ENV = {
    **os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", "LC_ALL": "C",
}
MB = 1024**2


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=GIT_ENV,
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


class Origin:
    """A repository: main (c1 tagged v1, then c2) and branch `feature` (c3 from c1)."""

    def __init__(self, root: Path) -> None:
        self.path = root / "origin"
        self.path.mkdir()
        git(self.path, "init", "-q")
        plugin = self.path / "plugin"
        plugin.mkdir()
        (plugin / "config.yaml").write_text("parameters: {}\n")
        (plugin / "main.py").write_text("VERSION = 1\n")
        self.c1 = commit_all(self.path, "c1")
        git(self.path, "tag", "v1")
        (plugin / "main.py").write_text("VERSION = 2\n")
        self.c2 = commit_all(self.path, "c2")
        git(self.path, "checkout", "-q", "-b", "feature", self.c1)
        (self.path / "feature.txt").write_text("feature\n")
        self.c3 = commit_all(self.path, "c3")
        git(self.path, "checkout", "-q", "main")
        self.url = self.path.as_uri()


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    return Origin(tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> GitStore:
    return GitStore(tmp_path / "data")


def version(result: FetchResult) -> str:
    return (result.checkout_dir / "plugin" / "main.py").read_text().strip()


def assert_nothing_left(store: GitStore, name: str) -> None:
    assert not os.path.lexists(store.plugins_dir / name)
    assert list(store.tmp_dir.iterdir()) == []


def fetch_error(store: GitStore, name: str, source: PluginSource, **kwargs: Any) -> IochostError:
    with pytest.raises(IochostError) as info:
        store.fetch(name, source, **kwargs)
    assert_nothing_left(store, name)
    return info.value


def cmdlines() -> Iterator[tuple[str, bytes]]:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                yield pid, Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue


# -- cloning -------------------------------------------------------------------------------------
def test_clone_default_branch(store: GitStore, origin: Origin) -> None:
    result = store.fetch("p1", PluginSource(git_url=origin.url))
    assert result.commit == origin.c2
    assert result.checkout_dir == result.plugin_dir == store.plugins_dir / "p1"
    assert version(result) == "VERSION = 2"
    assert not (result.checkout_dir / "feature.txt").exists()
    assert git(result.checkout_dir, "config", "remote.origin.url") == origin.url
    assert list(store.tmp_dir.iterdir()) == []


@pytest.mark.parametrize("branch, expected", [("feature", "c3"), ("v1", "c1"), ("main", "c2")])
def test_clone_branch_or_tag(store: GitStore, origin: Origin, branch: str, expected: str) -> None:
    result = store.fetch("p1", PluginSource(git_url=origin.url, branch=branch))
    assert result.commit == getattr(origin, expected)
    assert git(result.checkout_dir, "rev-parse", "HEAD") == result.commit


@pytest.mark.parametrize("digits", [40, 7])
def test_commit_pin_full_and_short(store: GitStore, origin: Origin, digits: int) -> None:
    result = store.fetch("p1", PluginSource(git_url=origin.url, commit=origin.c1[:digits].upper()))
    assert result.commit == origin.c1
    assert git(result.checkout_dir, "rev-parse", "HEAD") == origin.c1
    assert version(result) == "VERSION = 1"
    assert git(result.checkout_dir, "status", "--porcelain") == ""


def test_branch_and_commit(store: GitStore, origin: Origin) -> None:
    result = store.fetch("p1", PluginSource(git_url=origin.url, branch="feature", commit=origin.c1))
    assert result.commit == origin.c1
    assert not (result.checkout_dir / "feature.txt").exists()


def test_path_subdirectory(store: GitStore, origin: Origin) -> None:
    result = store.fetch("p1", PluginSource(git_url=origin.url, path="plugin"))
    assert result.plugin_dir == store.plugins_dir / "p1" / "plugin"
    assert (result.plugin_dir / "config.yaml").is_file()
    assert store.plugin_dir("p1", "plugin/") == result.plugin_dir


def test_plain_path_url_is_cloned_not_hardlinked(store: GitStore, origin: Origin) -> None:
    result = store.fetch("p1", PluginSource(git_url=str(origin.path)))
    assert result.commit == origin.c2
    assert not (result.checkout_dir / ".git" / "objects" / "info" / "alternates").exists()


# -- failures ------------------------------------------------------------------------------------
@pytest.mark.parametrize("source_kwargs, gist", [
    ({"git_url": "file:///nonexistent/repo.git"}, "unreachable URL or repository not found"),
    ({"git_url": "http://127.0.0.1:1/repo.git"}, "unreachable URL or repository not found"),
    ({"branch": "nope"}, "no such branch or tag 'nope'"),
    ({"commit": "deadbeef"}, "no such commit 'deadbeef'"),
    ({"commit": "0" * 40}, "no such commit"),
])
def test_fetch_failures(store: GitStore, origin: Origin, source_kwargs: dict[str, str], gist: str) -> None:
    source = PluginSource(**{"git_url": origin.url, **source_kwargs})
    error = fetch_error(store, "p1", source)
    assert error.code == ErrorCode.FETCH_FAILED
    assert gist in error.message


@pytest.mark.parametrize("path, gist", [
    ("../outside", "'..'"),
    ("plugin/../../outside", "'..'"),
    ("/etc", "absolute"),
    ("nope", "not a directory"),
    ("plugin/main.py", "not a directory"),
])
def test_bad_path(store: GitStore, origin: Origin, path: str, gist: str) -> None:
    error = fetch_error(store, "p1", PluginSource(git_url=origin.url, path=path))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert gist in error.message and path in error.message


@pytest.mark.parametrize("link_name, path, gist", [
    ("plugin/secret", "plugin", "plugin/secret is a symlink pointing outside"),
    ("escape", "escape", "resolves outside the repository"),
    ("escape", None, "escape is a symlink pointing outside"),
])
def test_symlink_pointing_outside(store: GitStore, origin: Origin, tmp_path: Path,
                                  link_name: str, path: str | None, gist: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (origin.path / link_name).symlink_to(outside)
    commit_all(origin.path, "link out")
    error = fetch_error(store, "p1", PluginSource(git_url=origin.url, path=path))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert gist in error.message


def test_symlink_inside_is_fine(store: GitStore, origin: Origin) -> None:
    (origin.path / "plugin" / "alias.py").symlink_to("main.py")
    (origin.path / "dangling").symlink_to("does-not-exist")
    commit_all(origin.path, "inner links")
    result = store.fetch("p1", PluginSource(git_url=origin.url, path="plugin"))
    assert (result.plugin_dir / "alias.py").read_text() == "VERSION = 2\n"


@pytest.mark.parametrize("source_kwargs, field", [
    ({"git_url": "https://user:s3cret@example.com/x.git"}, "git_url"),
    ({"git_url": "https://tok3n@example.com/x.git"}, "git_url"),
    ({"git_url": "--upload-pack=touch /tmp/x"}, "git_url"),
    ({"git_url": "file:///x", "local_path": "/x"}, None),
    ({}, None),
    ({"local_path": "/x", "branch": "main"}, None),
    ({"git_url": "file:///x", "commit": "HEAD~1"}, "commit"),
    ({"git_url": "file:///x", "commit": "abcdef"}, "commit"),  # 6 digits: the API's 7 to 40 holds here too
    ({"git_url": "file:///x", "branch": "--upload-pack=x"}, "branch"),
    ({"git_url": "file:///x", "branch": "a b"}, "branch"),
])
def test_malformed_source(store: GitStore, source_kwargs: dict[str, str], field: str | None) -> None:
    error = fetch_error(store, "p1", PluginSource(**source_kwargs))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert error.details.get("field") == field
    assert "s3cret" not in error.message and "tok3n" not in error.message


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".", "x" * 41])  # 41: longer than PV names allow
def test_bad_name(store: GitStore, origin: Origin, name: str) -> None:
    with pytest.raises(IochostError) as info:
        store.fetch(name, PluginSource(git_url=origin.url))
    assert info.value.code == ErrorCode.INVALID_REQUEST
    assert list(store.plugins_dir.iterdir()) == [] and list(store.tmp_dir.iterdir()) == []


def test_existing_checkout(store: GitStore, origin: Origin) -> None:
    first = store.fetch("p1", PluginSource(git_url=origin.url))
    with pytest.raises(IochostError) as info:
        store.fetch("p1", PluginSource(git_url=origin.url, branch="feature"))
    assert info.value.code == ErrorCode.PLUGIN_EXISTS
    assert git(first.checkout_dir, "rev-parse", "HEAD") == origin.c2
    assert list(store.tmp_dir.iterdir()) == []


def test_concurrent_fetches_of_one_name(store: GitStore, origin: Origin) -> None:
    outcomes: list[str] = []

    def fetch() -> None:
        try:
            store.fetch("p1", PluginSource(git_url=origin.url))
            outcomes.append("ok")
        except IochostError as exc:
            outcomes.append(exc.code.value)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["PLUGIN_EXISTS"] * 3 + ["ok"]
    assert git(store.plugins_dir / "p1", "rev-parse", "HEAD") == origin.c2
    assert list(store.tmp_dir.iterdir()) == []


def test_empty_repository(store: GitStore, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    error = fetch_error(store, "p1", PluginSource(git_url=empty.as_uri()))
    assert error.code == ErrorCode.FETCH_FAILED and "is empty" in error.message


def big_repo(root: Path, size: int) -> Path:
    repo = root / "big"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "blob.bin").write_bytes(os.urandom(size))
    commit_all(repo, "big")
    return repo


def test_size_limit(store: GitStore, tmp_path: Path) -> None:
    repo = big_repo(tmp_path, 3 * MB)
    error = fetch_error(store, "big", PluginSource(git_url=repo.as_uri()), max_bytes=1 * MB)
    assert error.code == ErrorCode.FETCH_FAILED
    assert "larger than 1 MB" in error.message


def test_size_limit_local_path(store: GitStore, tmp_path: Path) -> None:
    repo = big_repo(tmp_path, 2 * MB)
    error = fetch_error(store, "big", PluginSource(local_path=str(repo)), max_bytes=1 * MB)
    assert error.code == ErrorCode.FETCH_FAILED and "larger than 1 MB" in error.message


# -- an HTTP git server (tests/githttp.py): git http-backend behind Basic auth -------------------
@pytest.fixture
def served(tmp_path: Path, origin: Origin) -> Iterator[tuple[GitServer, str]]:
    """The origin repo served over HTTP, requiring a PAT as the Basic-auth password."""
    root = tmp_path / "srv"
    root.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(origin.path), str(root / "repo.git")], check=True)
    pat = "ghp_TestSecret" + os.urandom(8).hex()
    server = GitServer(root, pat)
    try:
        yield server, pat
    finally:
        server.close()


class CmdlineWatch(threading.Thread):
    """Samples every process's command line while a clone runs."""

    def __init__(self, secret: str, marker: str) -> None:
        super().__init__(daemon=True)
        self.secret, self.marker = secret.encode(), marker.encode()
        self.leaks: list[bytes] = []
        self.seen_clone = False
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for _, line in cmdlines():
                if self.secret in line:
                    self.leaks.append(line)
                if self.marker in line:
                    self.seen_clone = True


def test_pat_clone_leaks_nowhere(store: GitStore, served: tuple[GitServer, str], origin: Origin,
                                 tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server, pat = served
    server.pack_delay = 0.5
    url = server.url("repo.git")
    caplog.set_level("DEBUG")
    watch = CmdlineWatch(pat, url)
    watch.start()
    try:
        result = store.fetch("priv", PluginSource(git_url=url, path="plugin"), pat=pat)
    finally:
        watch.stop.set()
        watch.join()
    assert result.commit == origin.c2
    assert server.usernames and set(server.usernames) == {"x-access-token"}
    assert watch.seen_clone, "the sampler never saw git running; it proves nothing"
    assert watch.leaks == []
    assert git(result.checkout_dir, "config", "remote.origin.url") == url
    registry = Registry(tmp_path / "data" / "registry.json")
    registry.put(RegistryEntry(name="priv", kind="task", class_name="P", source=PluginSource(
        git_url=url, path="plugin"), commit=result.commit, created_at="2024-01-01T00:00:00Z",
        updated_at="2024-01-01T00:00:00Z"))
    for folder, _, files in os.walk(tmp_path / "data"):
        for file in files:
            assert pat.encode() not in Path(folder, file).read_bytes(), Path(folder, file)
    assert pat not in caplog.text
    assert list(store.tmp_dir.iterdir()) == []  # askpass helper gone


@pytest.mark.parametrize("given", ["wrong-token", None])
def test_pat_refused(store: GitStore, served: tuple[GitServer, str], given: str | None,
                     caplog: pytest.LogCaptureFixture) -> None:
    server, pat = served
    caplog.set_level("DEBUG")
    error = fetch_error(store, "priv", PluginSource(git_url=server.url("repo.git")), pat=given, timeout=30)
    assert error.code == ErrorCode.FETCH_FAILED
    assert "authentication refused" in error.message
    for secret in (pat, "wrong-token"):
        assert secret not in error.message and secret not in repr(error.details) and secret not in caplog.text


def test_size_watcher_kills_a_growing_clone(store: GitStore, tmp_path: Path) -> None:
    repo = big_repo(tmp_path, 4 * MB)
    root = tmp_path / "srv"
    root.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(root / "big.git")], check=True)
    server = GitServer(root, None)
    server.stall_after = 2 * MB  # the clone would hang here if the watcher did not kill it
    try:
        started = time.monotonic()
        error = fetch_error(store, "big", PluginSource(git_url=server.url("big.git")), timeout=60, max_bytes=MB)
        assert time.monotonic() - started < 20
    finally:
        server.close()
    assert error.code == ErrorCode.FETCH_FAILED and "larger than 1 MB" in error.message


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An HTTP server that accepts connections and never answers (a stuck or firewalled host)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except (TimeoutError, OSError):
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/repo.git"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def test_timeout_kills_git_and_its_children(store: GitStore, black_hole: str) -> None:
    started = time.monotonic()
    error = fetch_error(store, "slow", PluginSource(git_url=black_hole), timeout=1.0)
    assert time.monotonic() - started < 10
    assert error.code == ErrorCode.FETCH_FAILED
    assert "timed out after 1 s" in error.message
    survivors = [line for _, line in cmdlines() if black_hole.encode() in line]
    assert survivors == []  # neither git nor git-remote-http is left running

