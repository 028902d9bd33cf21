"""Every program a fork-server member can become, named once: the launcher's registry.

The daemon names a target by its key (``protocol.WORKER``, ``protocol.PROBE``) and never
imports this module: it imports softioc (through the worker's records) and the worker
package. Only a member imports it, after it has given up real-time privileges, so the
imports here are the member's preparation: what its program would import first, paid for
before the member is taken. Plain imports, so the import graph shows what members run.
"""

from __future__ import annotations

from typing import Callable

from iochost.launch import protocol
from iochost.worker import records  # noqa: F401 - softioc's record builder: the last step of both programs
from iochost.worker.main import main as run_worker
from iochost.worker.probe import main as run_probe

TARGETS: dict[str, Callable[[list[str]], None]] = {
    protocol.WORKER: run_worker,  # python -m iochost.worker SPEC_FILE
    protocol.PROBE: run_probe,  # python -m iochost.worker.probe REQUEST_FILE
}


def prepare_warm() -> None:
    """A warm member is the next worker: the rest of softioc, cothread, and QSRV's library
    (which does not depend on the plugin), loaded while it waits."""
    import cothread  # noqa: F401 - its scheduler is made at import: only after the fork
    from softioc import softioc  # noqa: F401

    from iochost.worker.pva import load_qsrv_library

    load_qsrv_library()
