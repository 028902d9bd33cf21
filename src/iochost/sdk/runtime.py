"""The seam between a plugin object and the process hosting it.

A plugin never touches softioc directly: it calls ``set_pv``/``get_pv`` on itself, which
forward to a runtime. The worker attaches a runtime backed by real records; until then a
``MemoryRuntime`` keeps values in a dict, so plugin authors can unit-test their classes
without starting an IOC.
"""

from __future__ import annotations

from typing import Any, Protocol


class PluginRuntime(Protocol):
    """What a plugin may ask of its host."""

    def set_pv(self, name: str, value: Any) -> None: ...

    def get_pv(self, name: str) -> Any: ...

    def pv_names(self) -> list[str]: ...


class MemoryRuntime:
    """A dict of PV values: the runtime of a plugin that is not hosted by a worker."""

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        self.values: dict[str, Any] = dict(initial or {})

    def set_pv(self, name: str, value: Any) -> None:
        self.values[name] = value

    def get_pv(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise KeyError(f"no PV named {name!r}; known: {', '.join(sorted(self.values))}") from None

    def pv_names(self) -> list[str]:
        return sorted(self.values)
