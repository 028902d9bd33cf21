"""Keep EPICS from locking a worker's memory.

EPICS base calls ``mlockall(MCL_CURRENT | MCL_FUTURE)`` at iocInit whenever it finds it may
use real-time scheduling (root, CAP_SYS_NICE, or an RLIMIT_RTPRIO above 0): every thread
stack is then resident, ~1.2 GB locked and ~150 MB more PSS per soft IOC. A plugin host has
no use for that. Before softioc is imported, a worker gives up the two capabilities and the
real-time limit that lead there, so EPICS's SCHED_FIFO probe fails and it never locks. The
bounding set loses them too, so nothing the plugin runs can take them back. Only an
operator's explicit ``--worker-realtime`` keeps them.
"""

from __future__ import annotations

import ctypes
import resource

CAP_IPC_LOCK = 14
CAP_SYS_NICE = 23
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def forbid_memory_locking() -> None:
    """Drop CAP_SYS_NICE and CAP_IPC_LOCK (all sets) and set RLIMIT_RTPRIO to 0.

    Works on root and non-root alike; a process may always give up what it has."""
    resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header, data = _Header(_LINUX_CAPABILITY_VERSION_3, 0), (_Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    for cap in (CAP_SYS_NICE, CAP_IPC_LOCK):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # fails harmlessly without CAP_SETPCAP
        word, bit = divmod(cap, 32)
        mask = ~(1 << bit) & 0xFFFFFFFF
        data[word].effective &= mask
        data[word].permitted &= mask
        data[word].inheritable &= mask
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
