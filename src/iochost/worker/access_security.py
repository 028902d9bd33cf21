"""EPICS access security in a worker: the daemon's ACF, loaded by iocInit's asInit.

Channel Access and pvxs (softioc's PVA server) both ask EPICS's access security whether a
client may read or write a record, by the record's group (its ASG field), the user the
client claims and its host. ``prepare`` runs before iocInit: it sets the groups the spec
names, makes CA check hosts by address as pvxs does (``asCheckClientIP``), and points
asInit at the file. iocInit does not fail when asInit rejects the file
(it logs "asInit Failed" and stops building the IOC, and softioc does not look at its
status), so ``problem`` checks afterwards that access security is active: a worker must
never serve unprotected PVs when a file was given. The daemon checks the file once at
start (``iochost.access_security_check``).
"""

from __future__ import annotations

import ctypes
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
