"""An upgrade's revisions beside the running checkout: staged, swapped in, swapped back, dropped.

Upgrade `op` (``paths.new_upgrade_op``) of plugin `name` owns the area
``tmp/upgrade-<name>.<op>/``: the staged revision (``new``), then the one it replaced
(``old``), and, after a swap back, the one that failed (``failed``). Only that upgrade
removes its area; a daemon that died mid-upgrade rolls it back at the next start
(``roll_back_interrupted``), before the rest of ``tmp`` is cleared.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from pathlib import Path

from iochost.durable import fsync_dir
from iochost.store.paths import NAME_RE, upgrade_area

log = logging.getLogger("iochost.store")

_UPGRADE, _NEW, _OLD, _FAILED = "upgrade-", "new", "old", "failed"


class UpgradeStaging:
    """The staging areas under `tmp_dir` of the checkouts in `plugins_dir`; `lock` is the
    checkout store's, held around every rename into or out of ``plugins/``."""

    def __init__(self, tmp_dir: Path, plugins_dir: Path, lock: threading.Lock) -> None:
        self.tmp_dir = tmp_dir
        self.plugins_dir = plugins_dir
        self._lock = lock

    def new_area(self, name: str, op: str) -> Path:
        """Create upgrade `op`'s area; return where its new revision is to be fetched."""
        staging = self._area(name, op)
        staging.mkdir(mode=0o700)  # an upgrade stages once: an existing area is a bug, not to be reused
        return staging / _NEW

    def swap_in(self, name: str, op: str) -> None:
        """Put the staged revision in place; the previous one is kept for ``swap_back``."""
        staging, dest = self._area(name, op), self.plugins_dir / name
        with self._lock:
            os.rename(dest, staging / _OLD)
            os.rename(staging / _NEW, dest)
            fsync_dir(self.plugins_dir)
            fsync_dir(staging)

    def swap_back(self, name: str, op: str) -> None:
        """Undo ``swap_in``: the previous revision is in place again, the new one dropped."""
        staging, dest = self._area(name, op), self.plugins_dir / name
        with self._lock:
            if os.path.lexists(dest):
                os.rename(dest, staging / _FAILED)
            os.rename(staging / _OLD, dest)
            fsync_dir(self.plugins_dir)
        self.drop(name, op)

    def drop(self, name: str, op: str) -> None:
        """Forget what upgrade `op` staged or kept; idempotent. After a swap_in this commits it."""
        staging = self._area(name, op)
        if os.path.lexists(staging):
            trash = self.tmp_dir / f"{name}-dropped-{uuid.uuid4().hex[:8]}"
            os.rename(staging, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def roll_back_interrupted(self) -> None:
        """At start, before ``tmp`` is cleared: an upgrade the daemon died in the middle of is
        rolled back. The registry still names the previous revision until the upgrade is
        committed, and the previous checkout is kept until then, so it goes back into place
        (the latest one, should two upgrades of a name have kept one)."""
        areas = sorted(self.tmp_dir.glob(f"{_UPGRADE}*"), key=lambda path: path.lstat().st_mtime)
        for staging in areas:  # upgrade-NAME.OP (upgrade-NAME before upgrades had ids)
            name, old = staging.name.removeprefix(_UPGRADE).split(".", 1)[0], staging / _OLD
            if old.is_dir() and NAME_RE.fullmatch(name):
                dest = self.plugins_dir / name
                if os.path.lexists(dest):
                    shutil.rmtree(dest, ignore_errors=True)
                os.rename(old, dest)
                log.warning("%s: an upgrade was interrupted; the previous revision is back in place", name)

    def _area(self, name: str, op: str) -> Path:
        return self.tmp_dir / f"{_UPGRADE}{upgrade_area(name, op)}"
