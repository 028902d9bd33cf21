"""One CA endpoint for every worker.

Each worker (one soft IOC per plugin) serves CA on a port of its own; with several IOCs
on one host a unicast name search would reach only one of them. The daemon therefore
owns the CA search port and answers every name search for every worker's PVs, pointing
the client at the right worker's TCP port (``responder``, sans-I/O, from the ``names``
table), and sends beacons that make clients search again when workers come and go
(``beacons``). ``server`` is the asyncio I/O around them, ``ports`` hands out worker
ports, ``netif`` finds interface broadcast addresses.
"""

from iochost.discovery.beacons import BeaconSchedule
from iochost.discovery.name_table import Conflict, Entry, NameTable
from iochost.discovery.ports import PortAllocator, port_is_free
from iochost.discovery.responder import SearchResponder
from iochost.discovery.server import CAEndpoint

__all__ = [
    "BeaconSchedule",
    "CAEndpoint",
    "Conflict",
    "Entry",
    "NameTable",
    "PortAllocator",
    "SearchResponder",
    "port_is_free",
]
