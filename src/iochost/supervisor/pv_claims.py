"""Which PV names each plugin claims: a plugin's name and PV prefix must not collide with
another plugin's or the daemon's own (``{PREFIX}:IOCHOST:*``)."""

from __future__ import annotations

from iochost.config.pvnames import nested_segment, plugin_pv_prefix, same_segment
from iochost.errors import ErrorCode, IochostError
from iochost.settings import Settings
from iochost.store import RegistryEntry
from iochost.supervisor.daemon_ioc import SYSTEM_NAME
from iochost.supervisor.plugin_table import PluginTable
from iochost.supervisor.shell import Shell
from iochost.supervisor.states import State


class PVClaims:
    """Checks names and PV prefixes against the plugins in ``table``.

    ``boot_claims``: registered plugins' PV prefixes as their checkouts say at start; an add
    or upgrade during the restore is checked against them until each restore claims its
    own (or fails)."""

    def __init__(self, settings: Settings, table: PluginTable) -> None:
        self.settings = settings
        self.table = table
        self.boot_claims: dict[str, str] = {}

    def check_name_free(self, name: str) -> None:
        """PLUGIN_EXISTS for a name taken (case aside: the PV names would be the same) or reserved."""
        upper = name.upper()
        if upper == SYSTEM_NAME.upper():
            raise IochostError(ErrorCode.PLUGIN_EXISTS, f"plugin name {name!r} is reserved for the daemon's own PVs")
        for other in self.table.slots:
            if other.upper() == upper:
                detail = "" if other == name else f" (same PV names as {other!r})"
                raise IochostError(ErrorCode.PLUGIN_EXISTS, f"plugin {name!r} already exists{detail}")

    def clash(self, name: str, pv_prefix: str) -> IochostError | None:
        """PLUGIN_EXISTS when plugin ``name``'s PVs, all under ``pv_prefix`` (its config.yaml's
        ``prefix:`` or its name), would be named like another plugin's or the daemon's own
        (case aside: operators cannot tell those apart), or lie inside theirs or around them
        (``X`` with a PV ``Y:STATUS`` and ``X:Y``'s STATUS are one name). A plugin whose prefix
        is not read yet (still fetching, not restored) is checked when it is."""
        what = f"plugin {name!r}: its PVs would be named {pv_prefix}:..."

        def overlap(owner: str, taken: str) -> str | None:
            if same_segment(pv_prefix, taken):
                return f"as {owner} ({taken}:...)"
            if nested_segment(pv_prefix, taken):
                return f"inside or around {owner} ({taken}:...: a PV of one could be named as one of the other's)"
            return None

        system = plugin_pv_prefix(self.settings.prefix, SYSTEM_NAME)
        clash = overlap("the daemon's own PVs", system)
        if clash is not None:
            return IochostError(ErrorCode.PLUGIN_EXISTS, f"{what}, {clash}; choose another prefix: in config.yaml",
                                plugin=name)
        checked = self.table.slots.get(name)
        newcomer = checked is not None and (checked.lc.adding or checked.lc.upgrade is not None)
        for other, slot in self.table.slots.items():
            lc = slot.lc
            claimed = [lc.pv_prefix] if lc.pv_prefix_known else []
            if newcomer and not claimed and lc.state is State.PENDING and not lc.adding and other in self.boot_claims:
                claimed.append(self.boot_claims[other])  # registered, its restore not done: it comes first
            if lc.upgrade is not None and lc.upgrade.new is not None and lc.upgrade.new.pv_prefix:
                claimed.append(lc.upgrade.new.pv_prefix)  # an upgrade about to take it
            clash = next((found for taken in claimed if (found := overlap(f"plugin {other!r}'s", taken))), None)
            if other != name and clash is not None:
                return IochostError(ErrorCode.PLUGIN_EXISTS, f"{what}, {clash}; choose another prefix: in "
                                    "config.yaml or another name", plugin=name, other=other)
        return None


def checkout_pv_prefixes(shell: Shell, entries: list[RegistryEntry]) -> dict[str, str]:
    """Blocking: each entry's PV prefix by the config.yaml of its checkout as it is on disk
    (its restore reads it again at the registered commit); none for one without a readable
    checkout."""
    prefixes = {}
    for entry in entries:
        try:
            pv_prefix = shell.configured_pv_prefix(
                entry.name, shell.services.store.plugin_dir(entry.name, entry.source.path))
        except (OSError, IochostError):
            continue
        if pv_prefix is not None:
            prefixes[entry.name] = pv_prefix
    return prefixes
