"""The registry: the desired state of every plugin, one JSON file, rewritten atomically.

Every change is persisted before the call returns: the whole file is written to a temp
file in the same directory, flushed and fsynced, renamed over the old one, and the
directory is fsynced, so after a crash or power loss the file is either the old or the
new version, never a torn one. A write the OS refuses (a full disk: any OSError) raises
STORAGE_FULL and leaves the registry, in memory and on disk, as it was. Methods are
thread-safe: the supervisor calls them from `asyncio.to_thread` concurrently.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from iochost.durable import remove_stale_temps, storage_error, write_atomically
from iochost.errors import ErrorCode, IochostError
from iochost.store.entries import RegistryEntry

FORMAT_VERSION = 1


class RegistryError(IochostError):
    """The registry file cannot be read; the daemon must not start and forget plugins."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(ErrorCode.INTERNAL_ERROR,
                         f"registry file {path} is unusable: {problem}; fix it or move it aside "
                         "(every plugin in it would otherwise be forgotten)", path=str(path))


class Registry:
    """Desired state of every plugin, keyed by name, persisted on every change."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._entries: dict[str, RegistryEntry] = {}
        self._loaded = False
        self._lock = threading.RLock()

    def load(self) -> None:
        """Read the file (missing = empty); raise RegistryError if it is corrupt."""
        with self._lock:
            remove_stale_temps(self.path)  # the daemon is the registry's one writer: a crash left them
            self._entries = self._read()
            self._loaded = True

    def entries(self) -> list[RegistryEntry]:
        with self._lock:
            self._ensure_loaded()
            return list(self._entries.values())

    def get(self, name: str) -> RegistryEntry | None:
        with self._lock:
            self._ensure_loaded()
            return self._entries.get(name)

    def put(self, entry: RegistryEntry) -> bool:
        """Add or replace `entry` and persist before returning (STORAGE_FULL: nothing changed).

        An entry that differs only in `updated_at` is already saved: not written again (the
        supervisor saves an operator's change before the lifecycle asks for the same one).
        True: the file was written."""
        with self._lock:
            self._ensure_loaded()
            held = self._entries.get(entry.name)
            if held is not None and _same(held, entry):
                return False
            entries = {**self._entries, entry.name: entry}
            self._write(entries)
            self._entries = entries
            return True

    def remove(self, name: str) -> bool:
        """Forget `name` and persist; idempotent (STORAGE_FULL: nothing changed). True: the
        file was written."""
        with self._lock:
            self._ensure_loaded()
            if name not in self._entries:
                return False
            entries = {k: v for k, v in self._entries.items() if k != name}
            self._write(entries)
            self._entries = entries
            return True

    def flush(self) -> None:
        """Write the file again as it is: whether the disk takes a write now (STORAGE_FULL if not)."""
        with self._lock:
            self._ensure_loaded()
            self._write(self._entries)

    # -- file I/O -----------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if not self._loaded:  # never overwrite a file we have not read
            self.load()

    def _read(self) -> dict[str, RegistryEntry]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise RegistryError(self.path, f"cannot read it ({exc.strerror})") from None
        try:
            data: Any = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegistryError(self.path, f"not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("plugins"), dict):
            raise RegistryError(self.path, 'expected an object with "version" and "plugins"')
        version = data.get("version")
        if version != FORMAT_VERSION:
            raise RegistryError(self.path, f"format version {version!r}, this iochost reads {FORMAT_VERSION}")
        entries: dict[str, RegistryEntry] = {}
        for name, value in data["plugins"].items():
            try:
                entry = RegistryEntry.model_validate(value)
            except ValidationError as exc:
                raise RegistryError(self.path, f"plugin {name!r}: {exc.errors()[0]['msg']} at "
                                               f"{'.'.join(map(str, exc.errors()[0]['loc']))}") from None
            if entry.name != name:
                raise RegistryError(self.path, f"plugin key {name!r} holds an entry named {entry.name!r}")
            entries[name] = entry
        return entries

    def _write(self, entries: dict[str, RegistryEntry]) -> None:
        data = {"version": FORMAT_VERSION,
                "plugins": {name: e.model_dump(mode="json") for name, e in sorted(entries.items())}}
        payload = json.dumps(data, indent=2).encode() + b"\n"
        try:
            write_atomically(self.path, payload)
        except OSError as exc:
            raise storage_error(self.path, exc, "the registry cannot be saved") from exc


def _same(a: RegistryEntry, b: RegistryEntry) -> bool:
    return a.model_dump(exclude={"updated_at"}) == b.model_dump(exclude={"updated_at"})
