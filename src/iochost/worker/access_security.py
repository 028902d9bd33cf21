"""EPICS access security in a worker: the daemon's ACF, loaded by iocInit's asInit.

Channel Access and pvxs (softioc's PVA server) both ask EPICS's access security whether a
client may read or write a record, by the record's group (its ASG field), the user the
client claims and its host. ``prepare`` runs before iocInit: it sets the groups the spec
names, makes CA check hosts by address as pvxs does (``asCheckClientIP``), and points
asInit at the file. iocInit does not fail when asInit rejects the file
(it logs "asInit Failed" and stops building the IOC, and softioc does not look at its
status), so ``problem`` checks afterwards that access security is active: a worker must
never serve unprotected PVs when a file was given.
"""

from __future__ import annotations

import ctypes
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from iochost.contract.worker_spec import WorkerSpec

if TYPE_CHECKING:  # records imports softioc
    from iochost.worker.records import PVTable


def prepare(spec: WorkerSpec, table: PVTable) -> None:
    """Before iocInit (and before the records are loaded): record groups, then the ACF."""
    security = spec.access_security
    if security is None:
        return
    for name, group in security.groups.items():
        table.records[name].ASG = group
    from epicscorelibs.ioc import Com, dbCore  # as softioc.imports loads them

    # Hosts by the client's address, not the name it claims: CA then checks what PVA (pvxs)
    # checks, and a HAG's names are resolved once, at asInit.
    ctypes.c_int.in_dll(Com, "asCheckClientIP").value = 1

    set_filename = dbCore.asSetFilename
    set_filename.argtypes = (ctypes.c_char_p,)
    set_filename.restype = ctypes.c_int
    if set_filename(security.file.encode()) != 0:
        raise OSError(f"asSetFilename({security.file!r}) failed")


def problem(spec: WorkerSpec) -> str | None:
    """After iocInit: why the ACF is not in force, or None (also None without one)."""
    security = spec.access_security
    if security is None:
        return None
    from epicscorelibs.ioc import Com

    if ctypes.c_int.in_dll(Com, "asActive").value:
        return None
    return (f"access security file {security.file} was rejected by asInit (the line is in this worker's "
            "log); refusing to serve PVs without it (--epics-access-security)")


def check_file(path: Path) -> str | None:
    """Why asInit would reject the ACF at ``path`` (EPICS's parser message, with its line),
    or None. Parsed in a child process: EPICS's libraries start threads, which the daemon
    must not have (it forks its workers)."""
    try:
        result = subprocess.run([sys.executable, "-m", __name__, str(path)], capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"access security file {path} could not be checked: {exc}"
    if result.returncode == 0:
        return None
    said = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # errlog colours ERROR
    detail = "; ".join(line.strip() for line in said.splitlines() if line.strip()) or f"exit {result.returncode}"
    return f"access security file {path} is refused by EPICS: {detail} (--epics-access-security)"


def _parse(path: str) -> int:
    from epicscorelibs.ioc import Com

    init_file = Com.asInitFile
    init_file.argtypes, init_file.restype = (ctypes.c_char_p, ctypes.c_char_p), ctypes.c_long
    return 0 if init_file(path.encode(), None) == 0 else 1


if __name__ == "__main__":  # check_file's child
    sys.exit(_parse(sys.argv[1]))
