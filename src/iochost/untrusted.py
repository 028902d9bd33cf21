"""Reading files that arrive with a plugin (config.yaml, requirements.txt, its Python code)
or that its processes write (git's and pip's output, a probe's stderr).

A checkout is attacker-controlled: a file may be a symlink to ``/dev/zero`` or to a file
outside the checkout, a FIFO that blocks forever, or simply gigabytes long. The daemon
reads such files only through these functions, which refuse anything but a regular file
inside the plugin's own tree and never read more than a stated number of bytes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB

# The limits on files a plugin brings, in one place (docs/explanation/security-model.md quotes them).
MAX_CONFIG_BYTES = 256 * KiB  # config.yaml
MAX_REQUIREMENTS_BYTES = 64 * KiB  # requirements.txt
MAX_SOURCE_BYTES = 1 * MiB  # one Python file of the plugin
MAX_SOURCE_FILES = 1000  # Python files in one plugin directory
OUTPUT_TAIL_BYTES = 64 * KiB  # what is kept of a tool's output (git, pip, the probe) for errors


class UntrustedFileError(Exception):
    """A plugin file the daemon will not read; the message says why, for the user."""


def _size(count: int) -> str:
    return f"{count / MiB:.1f} MiB" if count >= MiB else f"{count / KiB:.0f} KiB" if count >= KiB else f"{count} bytes"


def read_bounded(root: Path, relative: str | Path, limit: int) -> bytes:
    """The bytes of ``root/relative``: a regular file, inside ``root`` once symlinks are
    resolved, at most ``limit`` bytes. Raises UntrustedFileError (FileNotFoundError if absent)."""
    base = os.path.realpath(root)
    path = os.path.join(base, relative)
    real = os.path.realpath(path)
    if os.path.commonpath([base, real]) != base:
        raise UntrustedFileError(f"{relative} is a symlink to {real}, outside the plugin directory")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(real, flags)  # O_NONBLOCK: opening a FIFO must not wait for a writer
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedFileError(f"{relative} is not a regular file")
        if info.st_size > limit:
            raise UntrustedFileError(f"{relative} is {_size(info.st_size)}; the limit is {_size(limit)}")
        chunks, remaining = [], limit + 1  # a file growing while read is caught too
        while remaining > 0 and (chunk := os.read(fd, min(remaining, MiB))):
            chunks.append(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise UntrustedFileError(f"{relative} is over the limit of {_size(limit)}")
    return data


def read_text_bounded(root: Path, relative: str | Path, limit: int) -> str:
    """``read_bounded`` decoded as UTF-8 (UnicodeDecodeError is the caller's to report)."""
    return read_bounded(root, relative, limit).decode("utf-8")


def read_tail(path: Path, limit: int = OUTPUT_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of an output file we created, decoded leniently."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except FileNotFoundError:
        return ""
    text = data.decode(errors="replace")
    return text.split("\n", 1)[-1] if size > limit and "\n" in text else text
