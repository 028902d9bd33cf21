"""Path rules for checkouts: safe plugin names, `path` inside the repository, no escaping symlinks.

A plugin's `path` comes from a REST client and its files come from a git repository the
daemon does not control, so both are checked twice: lexically before anything is fetched
(fail fast, no network), and after the checkout exists, on the resolved file system (a
symlink can point anywhere).
"""

from __future__ import annotations

import os
import re
import stat
import uuid
from pathlib import Path, PurePosixPath

from iochost.config.pvnames import PLUGIN_NAME_PATTERN
from iochost.errors import ErrorCode, IochostError

NAME_RE = re.compile(PLUGIN_NAME_PATTERN)
OP_RE = re.compile(r"[0-9a-f]{16}")  # an upgrade's id (new_upgrade_op)


def check_name(name: str) -> None:
    """A plugin name becomes a directory name: allow no separators, dots or empties."""
    if not NAME_RE.fullmatch(name):
        raise IochostError(ErrorCode.INVALID_REQUEST,
                           f"plugin name {name!r} must match {NAME_RE.pattern}", field="name")


def new_upgrade_op() -> str:
    """A fresh id for one upgrade: its staging areas are named by it, not by the plugin
    alone, so an upgrade of a deleted plugin never touches those of its replacement."""
    return uuid.uuid4().hex[:16]


def upgrade_area(name: str, op: str) -> str:
    """The name of upgrade ``op``'s staging area of plugin ``name``: ``NAME.OP`` (a plugin
    name has no dot, so the name is what precedes the first one)."""
    check_name(name)
    if not OP_RE.fullmatch(op):
        raise ValueError(f"upgrade id {op!r} must match {OP_RE.pattern}")
    return f"{name}.{op}"


def check_relative_path(path: str | None) -> None:
    """Lexical check of `path`: relative, no `..`, no NUL; before cloning anything."""
    if path is None or path in ("", "."):
        return
    if "\x00" in path:
        raise IochostError(ErrorCode.INVALID_REQUEST, f"path {path!r} contains a NUL character", field="path")
    pure = PurePosixPath(path)
    if pure.is_absolute():
        raise IochostError(ErrorCode.INVALID_REQUEST,
                           f"path {path!r} must be relative to the repository root, not absolute", field="path")
    if ".." in pure.parts:
        raise IochostError(ErrorCode.INVALID_REQUEST,
                           f"path {path!r} must not contain '..' (it would leave the repository)", field="path")


def is_within(child: Path, root: Path) -> bool:
    """True when the already-resolved `child` is `root` or below it."""
    return child == root or root in child.parents


def resolve_plugin_dir(checkout: Path, path: str | None) -> Path:
    """The plugin directory inside `checkout`, after following symlinks; it must exist.

    Also refuses a checkout holding any symlink (outside `.git`) whose target resolves
    outside the checkout: plugin code could otherwise read or import files from anywhere.
    """
    check_relative_path(path)
    root = checkout.resolve()
    target = (root / path).resolve() if path not in (None, "", ".") else root
    if not is_within(target, root):
        raise IochostError(ErrorCode.INVALID_REQUEST,
                           f"path {path!r} resolves outside the repository (through a symlink)", field="path")
    if not target.is_dir():
        raise IochostError(ErrorCode.INVALID_REQUEST,
                           f"path {path!r} is not a directory in the repository", field="path")
    escaping = find_escaping_symlink(root)
    if escaping is not None:
        link, dest = escaping
        raise IochostError(ErrorCode.INVALID_REQUEST,
                           f"{link} is a symlink pointing outside the repository ({dest})", field="path")
    return target


def find_escaping_symlink(root: Path) -> tuple[str, str] | None:
    """First symlink below `root` (skipping `.git`) whose resolved target is outside `root`."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        if Path(dirpath) == root and ".git" in dirnames:
            dirnames.remove(".git")
        for entry in dirnames + filenames:
            full = Path(dirpath, entry)
            if full.is_symlink():
                dest = full.resolve()
                if not is_within(dest, root):
                    return str(full.relative_to(root)), os.readlink(full)
    return None


BLOCK = 4096


def tree_size(root: Path, stop_above: int | None = None) -> int:
    """Size of every regular file below `root` without following symlinks, each counted
    as at least one 4 KiB block, directories too (as on disk): a repository of millions of
    empty files is as over the limit as one of a few huge ones.

    Tolerates files vanishing underneath it: git renames its temporary pack files while
    a clone is running and this is called on the growing tree. Returns early once the
    total exceeds `stop_above`, so a huge tree is not walked to the end for a no.
    """
    total = 0
    stack = [str(root)]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
                        total += BLOCK
                    elif stat.S_ISREG(st.st_mode):
                        total += max(st.st_size, BLOCK)
                    if stop_above is not None and total > stop_above:
                        return total
        except (FileNotFoundError, NotADirectoryError):
            continue
    return total
