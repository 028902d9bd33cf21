"""The git store's checkouts against real git repositories: local paths, restore at the pinned commit (offline,
repairing a modified or moved checkout), remove and prune, an upgrade staged beside the checkout and swapped in or
rolled back, leftovers collected at start.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from iochost.errors import ErrorCode, IochostError
from iochost.store import (
    GitStore,
    PluginSource,
)
from iochost.store.paths import is_within, new_upgrade_op
from test_store import Origin, fetch_error, git, origin, store, version  # noqa: F401 - origin, store: fixtures


# -- local_path --------------------------------------------------------------------------------------
def test_local_path_plain_directory(store: GitStore, tmp_path: Path) -> None:
    src = tmp_path / "dev"
    (src / "__pycache__").mkdir(parents=True)
    (src / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (src / "config.yaml").write_text("parameters: {}\n")
    os.mkfifo(src / "fifo")  # copying it would block
    result = store.fetch("dev", PluginSource(local_path=str(src)))
    assert result.commit is None
    assert (result.plugin_dir / "config.yaml").read_text() == "parameters: {}\n"
    assert not (result.plugin_dir / "fifo").exists() and not (result.plugin_dir / "__pycache__").exists()
    (src / "config.yaml").write_text("changed\n")
    assert (result.plugin_dir / "config.yaml").read_text() == "parameters: {}\n"  # a snapshot
    assert store.restore("dev", PluginSource(local_path=str(src)), None).plugin_dir == result.plugin_dir


def test_local_path_git_work_tree(store: GitStore, origin: Origin) -> None:
    result = store.fetch("dev", PluginSource(local_path=str(origin.path), path="plugin"))
    assert result.commit == origin.c2
    assert (result.checkout_dir / ".git").is_dir()
    assert result.plugin_dir == result.checkout_dir / "plugin"


@pytest.mark.parametrize("local_path, code, gist", [
    ("relative/dir", ErrorCode.INVALID_REQUEST, "must be absolute"),
    ("/nonexistent/dir", ErrorCode.FETCH_FAILED, "does not exist"),
])
def test_local_path_errors(store: GitStore, local_path: str, code: ErrorCode, gist: str) -> None:
    error = fetch_error(store, "dev", PluginSource(local_path=local_path))
    assert error.code == code and gist in error.message


def test_local_path_containing_data_dir(store: GitStore, tmp_path: Path) -> None:
    error = fetch_error(store, "dev", PluginSource(local_path=str(tmp_path)))
    assert error.code == ErrorCode.FETCH_FAILED and "data directory" in error.message


def test_local_path_symlink_outside(store: GitStore, tmp_path: Path) -> None:
    src = tmp_path / "dev"
    src.mkdir()
    (src / "passwd").symlink_to("/etc/passwd")
    error = fetch_error(store, "dev", PluginSource(local_path=str(src)))
    assert error.code == ErrorCode.INVALID_REQUEST and "passwd is a symlink pointing outside" in error.message


# -- restore, remove, garbage -------------------------------------------------------------------------
def test_restore_offline_at_pinned_commit(tmp_path: Path, origin: Origin) -> None:
    data = tmp_path / "data"
    source = PluginSource(git_url=origin.url, commit=origin.c1[:10], path="plugin")
    fetched = GitStore(data).fetch("p1", source)
    subprocess.run(["rm", "-rf", str(origin.path)], check=True)  # no network, no origin
    restarted = GitStore(data)
    result = restarted.restore("p1", source, fetched.commit)
    assert result == fetched
    assert (result.plugin_dir / "main.py").read_text() == "VERSION = 1\n"


def test_restore_repairs_a_modified_or_moved_checkout(store: GitStore, origin: Origin) -> None:
    source = PluginSource(git_url=origin.url)
    fetched = store.fetch("p1", source)
    (fetched.checkout_dir / "plugin" / "main.py").write_text("tampered\n")
    (fetched.checkout_dir / "untracked.txt").write_text("kept\n")
    assert version(store.restore("p1", source, origin.c2)) == "VERSION = 2"
    assert (fetched.checkout_dir / "untracked.txt").exists()
    git(fetched.checkout_dir, "checkout", "-q", origin.c3)
    store.restore("p1", source, origin.c2)
    assert git(fetched.checkout_dir, "rev-parse", "HEAD") == origin.c2
    assert list(store.tmp_dir.iterdir()) == []


def test_restore_failures(store: GitStore, origin: Origin) -> None:
    source = PluginSource(git_url=origin.url)
    with pytest.raises(IochostError) as info:
        store.restore("p1", source, origin.c2)
    assert info.value.code == ErrorCode.FETCH_FAILED and "checkout of 'p1' missing" in info.value.message
    store.fetch("p1", PluginSource(git_url=origin.url, branch="v1"))
    git(store.plugins_dir / "p1", "-c", "gc.reflogExpire=now", "gc", "--quiet", "--prune=now")
    with pytest.raises(IochostError) as info:
        store.restore("p1", source, "f" * 40)
    assert info.value.code == ErrorCode.FETCH_FAILED and "does not contain commit" in info.value.message


def test_remove_is_idempotent_and_prune(store: GitStore, origin: Origin) -> None:
    for name in ("a", "b", "c"):
        store.fetch(name, PluginSource(git_url=origin.url))
    store.remove("a")
    store.remove("a")
    assert store.names() == ["b", "c"]
    assert store.prune({"b"}) == ["c"]
    assert store.names() == ["b"]
    assert list(store.tmp_dir.iterdir()) == []
    store.fetch("a", PluginSource(git_url=origin.url))  # the name is free again


def test_an_upgrade_is_staged_beside_the_checkout_swapped_in_and_back(store: GitStore, origin: Origin) -> None:
    store.fetch("p", PluginSource(git_url=origin.url, commit=origin.c1))
    op = new_upgrade_op()
    staged = store.stage("p", op, PluginSource(git_url=origin.url, commit=origin.c2))
    assert staged.commit == origin.c2 and not is_within(staged.checkout_dir.resolve(), store.plugins_dir.resolve())
    assert (store.plugins_dir / "p" / "plugin" / "main.py").read_text() == "VERSION = 1\n"  # untouched
    store.swap_in("p", op)
    assert (store.plugins_dir / "p" / "plugin" / "main.py").read_text() == "VERSION = 2\n"
    store.swap_back("p", op)
    assert (store.plugins_dir / "p" / "plugin" / "main.py").read_text() == "VERSION = 1\n"
    assert list(store.tmp_dir.iterdir()) == []
    op = new_upgrade_op()
    store.stage("p", op, PluginSource(git_url=origin.url))
    store.swap_in("p", op)
    store.drop_staged("p", op)  # the commit point: the previous revision is gone
    assert version(store.restore("p", PluginSource(git_url=origin.url), origin.c2)) == "VERSION = 2"
    assert list(store.tmp_dir.iterdir()) == []


def test_an_interrupted_upgrade_is_rolled_back_by_the_next_store(tmp_path: Path, origin: Origin) -> None:
    store = GitStore(tmp_path / "data")
    store.fetch("p", PluginSource(git_url=origin.url, commit=origin.c1))
    op = new_upgrade_op()
    store.stage("p", op, PluginSource(git_url=origin.url, commit=origin.c2))
    store.swap_in("p", op)  # the daemon dies here, before the upgrade is kept
    again = GitStore(tmp_path / "data")
    assert (again.plugins_dir / "p" / "plugin" / "main.py").read_text() == "VERSION = 1\n"
    assert list(again.tmp_dir.iterdir()) == []
    store.stage("p", new_upgrade_op(), PluginSource(git_url=origin.url, commit=origin.c2))  # dies before the swap
    again = GitStore(tmp_path / "data")
    assert (again.plugins_dir / "p" / "plugin" / "main.py").read_text() == "VERSION = 1\n"
    assert list(again.tmp_dir.iterdir()) == []


def test_an_upgrades_staging_area_is_its_own(store: GitStore, origin: Origin) -> None:
    """Named by the upgrade, not the plugin: a remove (a delete) and another upgrade of
    the same name leave it alone; only its upgrade drops it."""
    store.fetch("p", PluginSource(git_url=origin.url, commit=origin.c1))
    first, second = new_upgrade_op(), new_upgrade_op()
    store.stage("p", first, PluginSource(git_url=origin.url))
    store.remove("p")  # the plugin is deleted while its upgrade stages
    store.fetch("p", PluginSource(git_url=origin.url, commit=origin.c1))  # and added again
    store.stage("p", second, PluginSource(git_url=origin.url, commit=origin.c2))
    store.swap_in("p", second)
    store.drop_staged("p", first)  # the deleted plugin's upgrade cleans up, late
    store.swap_back("p", second)  # the replacement's rollback still has its previous revision
    assert (store.plugins_dir / "p" / "plugin" / "main.py").read_text() == "VERSION = 1\n"
    assert list(store.tmp_dir.iterdir()) == []
    with pytest.raises(ValueError, match="upgrade id"):
        store.stage("p", "../x", PluginSource(git_url=origin.url))


def test_leftovers_collected_at_start(tmp_path: Path) -> None:
    tmp = tmp_path / "data" / "tmp"
    (tmp / "p1-abc" / "checkout" / ".git").mkdir(parents=True)
    (tmp / "stray.log").write_text("x")
    GitStore(tmp_path / "data")
    assert list(tmp.iterdir()) == []

