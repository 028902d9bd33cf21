"""Sans-I/O CA beacon cadence, shaped so libca sees a *beacon anomaly* on demand.

libca (``bhe.cpp``) keeps, per beacon source address (IP + the server port in the
beacon), the last beacon ID and a running average of the beacon period. A beacon whose
period is <= 0.8 x the average (an IOC that just rebooted beacons fast), or the second
beacon of a server first seen after the client started, is an *anomaly*: libca then
moves channels that have been searching for a long time (search period above ~8 s)
back to the ~8 s search timer. IDs that repeat or jump by 2-3 are thrown away as duplicate routes, so the IDs
of one source must count up by one.

rsrv's cadence does exactly that after a reboot: beacons at 20 ms, then doubling up to
the steady period (EPICS_CAS_BEACON_PERIOD, 15 s by default). :class:`BeaconSchedule`
reproduces it and can restart the fast burst at any time (:meth:`BeaconSchedule.restart`)
while keeping the ID sequence, which is how the daemon tells clients "something new is
being served here, search again now".
"""

from __future__ import annotations

from iochost.discovery import camessages as ca
from iochost.epics_server_vars import CA_BEACON_PERIOD

FIRST_DELAY = 0.02  # rsrv: initial beacon period after start
ID_MODULUS = 1 << 32


class BeaconSchedule:
    """The beacons one CA server address sends, and the delay before each next one."""

    def __init__(self, server_port: int, period: float = CA_BEACON_PERIOD) -> None:
        if period <= FIRST_DELAY:
            raise ValueError(f"beacon period {period} s must exceed {FIRST_DELAY} s")
        self.server_port = server_port
        self.period = period
        self._delay = FIRST_DELAY
        self._next_id = 0

    def next_beacon(self) -> tuple[bytes, float]:
        """The beacon datagram to send now and how long to wait before the next one."""
        # Address 0 (INADDR_ANY): the receiving client or repeater substitutes the
        # datagram's source address, as it does for rsrv's beacons.
        beacon = ca.beacon(self.server_port, self._next_id)
        self._next_id = (self._next_id + 1) % ID_MODULUS
        delay = self._delay
        self._delay = min(self._delay * 2.0, self.period)
        return beacon, delay

    def restart(self) -> None:
        """Start a fast burst again (send one beacon now, then 20 ms, 40 ms, ...)."""
        self._delay = FIRST_DELAY
