"""A small, real file system that tests fill: a tmpfs mounted on the data dir.

The daemon and its workers meet ENOSPC exactly as on a full disk (writes cut off
half-way, fsync and rename refused); the tests run as root, and skip with the reason
where mounting is impossible.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

DISK_SIZE = "48m"  # a few small checkouts, their logs and the registry fit many times over


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_SIZE mounted on the daemon's data dir, unmounted at the end."""
    data = tmp_path / "data"
    data.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},mode=0755", "tmpfs", str(data)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs as the data dir (needs root or CAP_SYS_ADMIN): "
                    f"{mounted.stderr.strip() or mounted.returncode}")
    try:
        yield data
    finally:  # the daemon is stopped by then (its try/finally runs first)
        if subprocess.run(["umount", str(data)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(data)], check=True)


def fill(folder: Path) -> Path:
    """Write a file until the file system has not one byte left."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        size = 1 << 20
        while size:
            try:
                os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                size //= 2
    finally:
        os.close(fd)
    with pytest.raises(OSError) as full:
        (folder / "probe").write_bytes(b"x" * 4096)
    assert full.value.errno == errno.ENOSPC
    (folder / "probe").unlink(missing_ok=True)
    return filler
