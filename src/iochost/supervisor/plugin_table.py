"""The plugins the daemon holds, by name, and the daemon's own status IOC beside them.

One place answers "which slot is plugin X": every request looks its plugin up here and
gets PLUGIN_NOT_FOUND or WRONG_KIND the same way.
"""

from __future__ import annotations

from iochost.errors import ErrorCode, IochostError
from iochost.kinds import Kind
from iochost.supervisor.slots import PluginSlot


class PluginTable:
    """The registered plugins' slots (listed by the API) and the daemon IOC's (never listed)."""

    def __init__(self) -> None:
        self.slots: dict[str, PluginSlot] = {}
        self.system: PluginSlot | None = None  # the daemon's own status IOC, once started

    def find(self, name: str, kind: Kind | None = None) -> PluginSlot:
        """Plugin ``name``'s slot; with ``kind``, WRONG_KIND for one of the other kind
        (iocmng's /tasks and /jobs paths), unless it is still being added."""
        slot = self.slots.get(name)
        if slot is None:
            raise IochostError(ErrorCode.PLUGIN_NOT_FOUND, f"no plugin named {name!r}")
        if kind is not None and slot.lc.entry.kind != kind and not slot.lc.adding:
            raise IochostError(ErrorCode.WRONG_KIND, f"{name!r} is a {slot.lc.entry.kind}, not a {kind}")
        return slot

    def supervised(self) -> list[PluginSlot]:
        """Every plugin with a worker to watch and stop: the registered ones and the status IOC."""
        slots = list(self.slots.values())
        return slots + [self.system] if self.system is not None else slots
