"""The seam between a plugin object and the process hosting it.

A plugin never touches softioc directly: it calls ``set_pv``/``get_pv`` on itself, which
forward to a runtime. The worker attaches a runtime backed by real records; until then a
``MemoryRuntime`` keeps values in a dict, so plugin authors can unit-test their classes
without starting an IOC.
"""

from __future__ import annotations

from typing import Any, Protocol

from iochost.alarms import SEVERITIES, STATUSES, plugin_alarm


class PluginRuntime(Protocol):
    """What a plugin may ask of its host."""

    def set_pv(self, name: str, value: Any, severity: Any = None, alarm: Any = None) -> None: ...

    def set_alarm(self, name: str, severity: Any, alarm: Any = None) -> None: ...

    def get_pv(self, name: str) -> Any: ...

    def pv_names(self) -> list[str]: ...


class MemoryRuntime:
    """A dict of PV values: the runtime of a plugin that is not hosted by a worker.

    ``alarms`` keeps the (severity, status) names the plugin gave each PV, checked as the
    worker checks them; configured limits are not applied (there are no records)."""

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        self.values: dict[str, Any] = dict(initial or {})
        self.alarms: dict[str, tuple[str, str]] = {}

    def set_pv(self, name: str, value: Any, severity: Any = None, alarm: Any = None) -> None:
        given = plugin_alarm(severity, alarm)
        self.values[name] = value
        self.alarms[name] = (SEVERITIES[given[0]], STATUSES[given[1]])

    def set_alarm(self, name: str, severity: Any, alarm: Any = None) -> None:
        self.get_pv(name)  # the same KeyError as a read of an unknown PV
        given = plugin_alarm(severity, alarm)
        self.alarms[name] = (SEVERITIES[given[0]], STATUSES[given[1]])

    def get_pv(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise KeyError(f"no PV named {name!r}; known: {', '.join(sorted(self.values))}") from None

    def pv_names(self) -> list[str]:
        return sorted(self.values)
