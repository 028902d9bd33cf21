"""The registry (registry.json: round trip, failed and concurrent writes, stale and corrupt files) and the source
policy (allowed prefixes, local paths, messages that hide passwords).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from iochost.errors import ErrorCode, IochostError
from iochost.store import (
    PluginSource,
    Registry,
    RegistryEntry,
    RegistryError,
    check_source_allowed,
    validate_prefixes,
)


# -- registry ----------------------------------------------------------------------------------------
def entry(name: str, **update: Any) -> RegistryEntry:
    base = RegistryEntry(
        name=name, kind="task", class_name="Demo", source=PluginSource(git_url="https://example.com/x.git"),
        commit="a" * 40, module_file="demo.py", parameters={"interval": 1.0}, desired_state="running",
        created_at="2024-05-01T12:00:00Z", updated_at="2024-05-01T12:00:00Z", options={"grace_period": 3},
    )
    return base.model_copy(update=update)


def registry_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_registry_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    registry = Registry(path)
    registry.load()
    assert registry.entries() == [] and not path.exists()
    for name in ("one", "two", "three"):
        registry.put(entry(name))
        data = json.loads(path.read_text())  # valid after every put
        assert data["version"] == 1 and name in data["plugins"]
        assert registry_files(path) == ["registry.json"]  # no temp file left
    registry.put(entry("two", desired_state="stopped"))
    registry.remove("three")
    registry.remove("three")
    again = Registry(path)
    again.load()
    assert {e.name: e for e in again.entries()} == {"one": entry("one"), "two": entry("two", desired_state="stopped")}
    assert again.get("three") is None
    assert again.get("two").desired_state == "stopped"  # type: ignore[union-attr]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_registry_failed_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "registry.json"
    registry = Registry(path)
    registry.put(entry("one"))
    before = path.read_bytes()

    def broken(*args: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(IochostError) as refused:  # any OSError: STORAGE_FULL naming the file and the error
        registry.put(entry("two"))
    assert refused.value.code is ErrorCode.STORAGE_FULL and str(path) in refused.value.message
    assert "disk on fire" in refused.value.message
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert registry_files(path) == ["registry.json"]
    assert [e.name for e in registry.entries()] == ["one"]  # memory matches disk


def test_registry_concurrent_puts(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.json")
    threads = [threading.Thread(target=registry.put, args=(entry(f"p{i}"),)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    again = Registry(tmp_path / "registry.json")
    assert len(again.entries()) == 20


def test_registry_put_before_load_does_not_clobber(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    Registry(path).put(entry("one"))
    Registry(path).put(entry("two"))
    assert sorted(e.name for e in Registry(path).entries()) == ["one", "two"]


def test_registry_stale_temp_removed(tmp_path: Path) -> None:
    (tmp_path / ".registry.json.abc123.tmp").write_text("{half")
    Registry(tmp_path / "registry.json").load()
    assert registry_files(tmp_path / "registry.json") == []


@pytest.mark.parametrize("content, gist", [
    ('{"version": 1, "plugins": {"one": ', "not valid JSON"),
    ('[]', '"version" and "plugins"'),
    ('{"version": 99, "plugins": {}}', "format version 99"),
    ('{"version": 1, "plugins": {"one": {"name": "one"}}}', "plugin 'one'"),
    ('{"version": 1, "plugins": {"one": ENTRY}}', "holds an entry named 'two'"),
])
def test_registry_corrupt_file(tmp_path: Path, content: str, gist: str) -> None:
    path = tmp_path / "registry.json"
    path.write_text(content.replace("ENTRY", entry("two").model_dump_json()))
    with pytest.raises(RegistryError) as info:
        Registry(path).load()
    assert str(path) in info.value.message and gist in info.value.message
    assert path.read_text().startswith(content[:10])  # left for a human to fix


def test_source_has_no_pat_field() -> None:
    with pytest.raises(ValidationError):
        PluginSource(git_url="https://example.com/x.git", pat="secret")  # type: ignore[call-arg]
    assert "\"pat\"" not in entry("one").model_dump_json()


# -- source policy -----------------------------------------------------------------------------------
ORG = ["https://github.com/my-org/"]


@pytest.mark.parametrize("source, prefixes, allow_local, allowed", [
    ({"git_url": "https://github.com/my-org/repo.git"}, ORG, False, True),
    ({"git_url": "HTTPS://GitHub.COM:443/my-org/repo"}, ORG, False, True),
    ({"git_url": "https://github.com/my-org.evil.com/repo"}, ORG, False, False),
    ({"git_url": "https://github.com/my-org-evil/repo"}, ["https://github.com/my-org"], False, False),
    ({"git_url": "https://github.com/my-org"}, ["https://github.com/my-org"], False, True),
    ({"git_url": "https://github.com/my-org.git"}, ["https://github.com/my-org"], False, True),
    ({"git_url": "https://github.com/my-org/sub/repo"}, ["https://github.com/my-org"], False, True),
    ({"git_url": "https://github.com@evil.com/my-org/repo"}, ORG, False, False),
    ({"git_url": "https://github.com.evil.com/my-org/repo"}, ORG, False, False),
    ({"git_url": "https://github.com:8443/my-org/repo"}, ORG, False, False),
    ({"git_url": "http://github.com/my-org/repo"}, ORG, False, False),
    ({"git_url": "https://github.com/my-org/../other/repo"}, ORG, False, False),
    ({"git_url": "https://github.com/my-org/%2e%2e/other/repo"}, ORG, False, False),
    ({"git_url": "https://github.com/other/repo"}, ORG, False, False),
    ({"git_url": "https://gitlab.example.org/any/repo"}, [], False, True),
    ({"git_url": "git@github.com:my-org/repo.git"}, ["ssh://git@github.com/my-org/"], False, True),
    ({"git_url": "git@github.com:other/repo.git"}, ["ssh://git@github.com/my-org/"], False, False),
    ({"git_url": "ssh://git@github.com/my-org/repo"}, ["git@github.com:my-org/"], False, True),
    ({"git_url": "ext::sh -c touch% /tmp/pwned"}, [], True, False),
    ({"git_url": "ftp://example.com/repo"}, [], False, False),
    ({"git_url": "file:///srv/repo"}, [], False, False),
    ({"git_url": "/srv/repo"}, [], False, False),
    ({"git_url": "FILE:///srv/repo"}, ORG, True, True),
    ({"git_url": "/srv/repo"}, ORG, True, True),
    ({"local_path": "/srv/plugin"}, [], False, False),
    ({"local_path": "/srv/plugin"}, ORG, True, True),
])
def test_source_policy(source: dict[str, str], prefixes: list[str], allow_local: bool, allowed: bool) -> None:
    src = PluginSource(**source)
    if allowed:
        check_source_allowed(src, prefixes, allow_local)
        return
    with pytest.raises(IochostError) as info:
        check_source_allowed(src, prefixes, allow_local)
    assert info.value.code == ErrorCode.SOURCE_NOT_ALLOWED
    if "local_path" in source or source["git_url"].lower().startswith(("file:", "/")):
        assert "--allow-local-sources" in info.value.message


def test_policy_message_hides_passwords_and_prefixes_validate() -> None:
    with pytest.raises(IochostError) as info:
        check_source_allowed(PluginSource(git_url="https://u:hunter2@evil.com/x"), ORG, False)
    assert "hunter2" not in info.value.message and "evil.com" in info.value.message
    validate_prefixes(ORG + ["git@github.com:my-org/"])
    with pytest.raises(ValueError, match="github.com/my-org"):
        validate_prefixes(["github.com/my-org"])

