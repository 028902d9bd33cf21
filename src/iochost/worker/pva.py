"""PV Access for a worker's IOC: pvxs's QSRV library, loaded before the plugin is known.

``softioc.iocInit()`` loads QSRV before it starts EPICS: its dbd, its shared library
(4-6 ms in a forked worker) and its registration, all before the 0.5 s iocInit sleeps,
so before the first client is served. The library does not depend on the plugin: a warm
member of the fork server loads it while it waits for one, and iocInit's own load then
finds it loaded. The registration stays in iocInit: it reads the ``EPICS_PVAS_*``
environment, which a member only gets with its launch.
"""

from __future__ import annotations

import ctypes


def load_qsrv_library() -> None:
    """The library ``softioc.iocInit(enable_pva=True)`` loads, with the same flags."""
    from softioc.softioc import find_dso

    ctypes.CDLL(find_dso("pvxslibs.lib.pvxsIoc"), ctypes.RTLD_GLOBAL)
