"""The first CA read of a PV that does not exist yet, polled from its own process.

    python bench/ca_first_read.py PV PORT TIMEOUT

Prints ``ready`` once caproto is imported, waits for one line on stdin (the start), then
searches PORT on loopback for PV until a search is answered, then reads it with libca
(``cothread.catools``, the C client pyepics and cothread use); prints the
``time.perf_counter()`` of the value's arrival (CLOCK_MONOTONIC: the parent's clock too),
or ``timeout``. Its own process, so that polling does not take the GIL from the thread of
the parent that sends the POST and waits for its answer.

The searches are caproto's one-datagram ``search``, sent again every ``SEARCH_TIMEOUT``
while unanswered: libca's own retries back off (to ~0.25 s by the time a plugin comes
up), which would measure its schedule, not the server. The read is libca's: caproto's
synchronous client does not set TCP_NODELAY, and its small writes then wait ~40 ms for
the server's delayed ACKs, a stall of the client that production clients do not have.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

SEARCH_TIMEOUT = 0.02
READ_TIMEOUT = 2.0


def first_read(pv: str, timeout: float) -> float | None:
    from caproto import CaprotoError, bcast_socket
    from caproto.sync.client import search
    from cothread.catools import caget

    udp = bcast_socket()
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            search(pv, udp, SEARCH_TIMEOUT, max_retries=1)
        except (CaprotoError, OSError):  # not served yet: ask again
            continue
        try:
            caget(pv, timeout=READ_TIMEOUT)
            return time.perf_counter()
        except Exception:  # noqa: BLE001 - found but not read (a worker that just went away): search on
            continue
    return None


def main() -> None:
    pv, port, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    os.environ.update(EPICS_CA_ADDR_LIST=f"127.0.0.1:{port}", EPICS_CA_AUTO_ADDR_LIST="NO")
    for module in ("caproto.sync.client", "cothread.catools"):  # paid before "ready", not in the measurement
        importlib.import_module(module)

    print("ready", flush=True)
    sys.stdin.readline()
    answered = first_read(pv, timeout)
    print("timeout" if answered is None else repr(answered), flush=True)


if __name__ == "__main__":
    main()
