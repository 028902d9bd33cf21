"""Where a plugin's autosave file lives, and its removal: the facts the daemon and the worker share.

The supervisor names the file in each ``WorkerSpec`` and removes it at a plugin's teardown;
the worker (``worker/autosave.py``) reads and writes it. Both take the name from here, so
the daemon never imports the worker package.
"""

from __future__ import annotations

import logging
from pathlib import Path

from iochost.durable import temp_pattern

log = logging.getLogger("iochost.worker")  # the logger this message always had

BAD_SUFFIX = ".bad"  # an unreadable file is moved aside to NAME.json.bad for the operator


def path_for(folder: Path, name: str) -> Path:
    """A plugin's autosave file: keyed by name, so restarts and upgrades find it."""
    return folder / f"{name}.json"


def bad_path(path: Path) -> Path:
    """Where an unreadable autosave file is moved aside."""
    return path.with_name(path.name + BAD_SUFFIX)


def remove(path: Path) -> None:
    """Delete a plugin's autosave file, the copy of a bad one, and temp files: its teardown.
    A file that cannot be removed is logged; the delete still ends."""
    leftovers = [path, bad_path(path)]
    if path.parent.is_dir():
        leftovers += path.parent.glob(temp_pattern(path))
    for leftover in leftovers:
        try:
            leftover.unlink(missing_ok=True)
        except OSError as exc:
            log.error("cannot remove %s: %s", leftover, exc.strerror or exc)
