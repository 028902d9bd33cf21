"""Plugin checkouts under `data_dir/plugins/<name>`, each pinned at a resolved commit.

A fetch builds the checkout in a fresh directory under `data_dir/tmp` and renames it into
place only once it is complete and checked, so `plugins/<name>` either holds a whole,
validated checkout or does not exist: a failure or a crash leaves at most garbage in
`tmp`, which the next `GitStore` removes. The clone or copy itself is `clone.py`, the
offline restore `restore.py`, an upgrade's staged revisions `upgrade_staging.py`.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

from iochost.durable import fsync_dir, storage_error
from iochost.errors import ErrorCode, IochostError
from iochost.shortages import OUT_OF_SPACE
from iochost.store.clone import check_source, clone, copy_local, fetch_failed, megabytes
from iochost.store.entries import FetchResult, PluginSource
from iochost.store.gitcmd import scrub
from iochost.store.paths import check_name, resolve_plugin_dir, tree_size
from iochost.store.restore import ensure_at
from iochost.store.upgrade_staging import UpgradeStaging

log = logging.getLogger("iochost.store")

DEFAULT_MAX_BYTES = 200 * 1024**2


class GitStore:
    """Fetches plugin sources into checkouts and brings them back offline after a restart."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.plugins_dir = self.data_dir / "plugins"
        self.tmp_dir = self.data_dir / "tmp"
        self.plugins_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.tmp_dir, 0o700)
        self._lock = threading.Lock()  # the exists-check + rename into plugins/ is one step
        self._upgrades = UpgradeStaging(self.tmp_dir, self.plugins_dir, self._lock)
        self._collect_garbage()

    # -- public ----------------------------------------------------------------------------
    def checkout_dir(self, name: str) -> Path:
        check_name(name)
        return self.plugins_dir / name

    def plugin_dir(self, name: str, path: str | None) -> Path:
        """The resolved plugin directory of an existing checkout (checks `path` again)."""
        return resolve_plugin_dir(self.checkout_dir(name), path)

    def names(self) -> list[str]:
        """Names that have a checkout."""
        return sorted(p.name for p in self.plugins_dir.iterdir() if p.is_dir() and not p.is_symlink())

    def fetch(
        self,
        name: str,
        source: PluginSource,
        *,
        pat: str | None = None,
        timeout: float = 120.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        sync: bool = True,
    ) -> FetchResult:
        """Clone `source.git_url` (or snapshot `source.local_path`) into `plugins/<name>`.

        ``sync=False`` leaves making the rename durable to the caller (``sync()``), who can
        overlap the ~10 ms of it with other work but must call it before anything that
        records the checkout (the registry) is written.

        Raises IochostError: INVALID_REQUEST for a malformed source or `path`,
        PLUGIN_EXISTS when the checkout exists, FETCH_FAILED saying what went wrong.
        Nothing is left under `plugins/<name>` or `tmp` on failure; `pat` appears in no
        message, command line or file.
        """
        result = self._fetch_to(self.checkout_dir(name), name, source, pat=pat, timeout=timeout,
                                max_bytes=max_bytes)
        if sync:
            self.sync()
        return result

    def stage(self, name: str, op: str, source: PluginSource, *, pat: str | None = None, timeout: float = 120.0,
              max_bytes: int = DEFAULT_MAX_BYTES) -> FetchResult:
        """Fetch a new revision of the registered `name` beside its checkout, for upgrade `op`
        (``paths.new_upgrade_op``), into a staging area only that upgrade uses.

        The running revision stays in ``plugins/<name>`` untouched until ``swap_in``; a
        staged revision that is never swapped in is dropped with ``drop_staged`` by the
        upgrade that staged it (or by the next start's garbage collection, since it lives
        under ``tmp``)."""
        dest = self._upgrades.new_area(name, op)
        return self._fetch_to(dest, name, source, pat=pat, timeout=timeout, max_bytes=max_bytes)

    def swap_in(self, name: str, op: str) -> None:
        """Put the staged revision in place; the previous one is kept for ``swap_back``."""
        self._upgrades.swap_in(name, op)

    def swap_back(self, name: str, op: str) -> None:
        """Undo ``swap_in``: the previous revision is in place again, the new one dropped."""
        self._upgrades.swap_back(name, op)

    def drop_staged(self, name: str, op: str) -> None:
        """Forget what upgrade `op` staged or kept; idempotent. After a swap_in this commits it.
        Only that upgrade calls it: no other operation removes its area."""
        self._upgrades.drop(name, op)

    def warm_up(self) -> None:
        """Import GitPython now, once the daemon is idle, not in the first add's fetch."""
        importlib.import_module("git")

    def sync(self) -> None:
        """Make the checkouts renamed into ``plugins/`` so far durable."""
        fsync_dir(self.plugins_dir)

    def restore(self, name: str, source: PluginSource, commit: str | None) -> FetchResult:
        """The existing checkout, back at `commit`: local only, never the network.

        Tracked files someone modified are put back with a forced checkout (logged);
        untracked files are left alone.
        """
        dest = self.checkout_dir(name)
        if not dest.is_dir():
            raise fetch_failed(f"checkout of {name!r} missing at {dest}; delete and re-add the plugin")
        if commit is not None:
            ensure_at(name, dest, commit, self.tmp_dir)
        return FetchResult(dest, resolve_plugin_dir(dest, source.path), commit)

    def remove(self, name: str) -> None:
        """Delete `plugins/<name>` entirely; idempotent. Moved to tmp first, so it goes at
        once. An upgrade's staging area is not touched: the upgrade removes its own."""
        dest = self.checkout_dir(name)
        if not os.path.lexists(dest):
            return
        trash = self.tmp_dir / f"{name}-removed-{uuid.uuid4().hex[:8]}"
        os.rename(dest, trash)
        fsync_dir(self.plugins_dir)
        shutil.rmtree(trash, ignore_errors=True)

    def prune(self, keep: set[str]) -> list[str]:
        """Remove checkouts of names not in `keep` (left by a crash between fetch and register)."""
        removed = [n for n in self.names() if n not in keep]
        for n in removed:
            self.remove(n)
            log.warning("removed checkout %s: it has no registry entry", n)
        return removed

    # -- fetching ---------------------------------------------------------------------------
    def _fetch_to(self, dest: Path, name: str, source: PluginSource, *, pat: str | None, timeout: float,
                  max_bytes: int) -> FetchResult:
        check_source(source)
        if os.path.lexists(dest):
            raise IochostError(ErrorCode.PLUGIN_EXISTS, f"a checkout of {name!r} already exists")
        try:
            work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.tmp_dir))
        except OSError as exc:
            if exc.errno in OUT_OF_SPACE:
                raise storage_error(self.tmp_dir, exc, f"fetching {name!r}") from None
            raise
        secrets = [pat] if pat else []
        try:
            checkout = work / "checkout"
            commit: str | None  # None: a local directory that is not a git work tree
            if source.git_url is not None:
                commit = clone(source, checkout, work, pat=pat, timeout=timeout, max_bytes=max_bytes,
                               scratch=self.tmp_dir)
                origin = scrub(source.git_url, secrets)
            else:
                commit = copy_local(source, checkout, max_bytes, self.data_dir)
                origin = str(source.local_path)
            if tree_size(checkout, stop_above=max_bytes) > max_bytes:
                raise fetch_failed(f"checkout of {origin} larger than {megabytes(max_bytes)} MB")
            resolve_plugin_dir(checkout, source.path)
            with self._lock:
                if os.path.lexists(dest):
                    raise IochostError(ErrorCode.PLUGIN_EXISTS, f"a checkout of {name!r} already exists")
                os.rename(checkout, dest)
        except IochostError:
            raise
        except OSError as exc:
            if exc.errno not in OUT_OF_SPACE:
                raise fetch_failed(f"fetching {name!r} failed: {scrub(str(exc), secrets)}") from None
            raise storage_error(self.tmp_dir, exc, f"fetching {name!r}") from None
        except Exception as exc:  # noqa: BLE001 - any other failure is a fetch failure, scrubbed
            raise fetch_failed(f"fetching {name!r} failed: {scrub(str(exc), secrets)}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log.info("fetched %s from %s at %s", name, origin, commit or "(not a git work tree)")
        return FetchResult(dest, resolve_plugin_dir(dest, source.path), commit)

    # -- housekeeping -----------------------------------------------------------------------------
    def _collect_garbage(self) -> None:
        """Remove what a crashed fetch, remove or upgrade left in tmp. An upgrade the daemon
        died in the middle of is rolled back first; every staging area goes: its upgrade is dead."""
        self._upgrades.roll_back_interrupted()
        for leftover in self.tmp_dir.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            log.info("removed leftover %s", leftover)
