"""What tasks and jobs share: identity, parameters, logger and PV access."""

from __future__ import annotations

import logging
from abc import ABC
from typing import Any

from iochost.record_sizes import STRING_LENGTH
from iochost.sdk.runtime import MemoryRuntime, PluginRuntime


class PluginBase(ABC):
    """Common base of TaskBase and JobBase.

    The constructor keeps iocmng's signature (``name, parameters, pv_definitions,
    beamline_config, ophyd_devices, prefix``) so iocmng plugins that override
    ``__init__`` and call ``super().__init__(*args, **kwargs)`` keep working.
    """

    def __init__(
        self,
        name: str = "",
        parameters: dict[str, Any] | None = None,
        pv_definitions: dict[str, Any] | None = None,
        beamline_config: dict[str, Any] | None = None,
        ophyd_devices: dict[str, object] | None = None,
        prefix: str | None = None,
        **_ignored: Any,
    ) -> None:
        self.name = name
        self.parameters: dict[str, Any] = dict(parameters or {})
        self.pv_definitions: dict[str, Any] = dict(pv_definitions or {})
        self.beamline_config: dict[str, Any] = dict(beamline_config or {})
        self.ophyd_devices: dict[str, object] = dict(ophyd_devices or {})
        self.pv_prefix = f"{prefix}:{name.upper()}" if prefix else name.upper()
        self.logger = logging.getLogger(f"iochost.plugin.{name or type(self).__name__}")
        self._runtime: PluginRuntime = MemoryRuntime()

    # -- PV access ---------------------------------------------------------------
    def set_pv(self, name: str, value: Any, severity: Any = None, alarm: Any = None) -> None:
        """Publish a value on one of this plugin's PVs (name without prefix).

        ``severity`` (``"MINOR"``, ``"MAJOR"``, ... or 0-3) and ``alarm`` (the status:
        ``"HIGH"``, ``"STATE"``, ``"COMM"``, ... default ``"SOFT"``) go with this value; the
        PV's configured limits still apply and the higher severity wins. A later set_pv
        without them clears them. A bad name raises ValueError listing the valid ones."""
        self._runtime.set_pv(name, value, severity, alarm)

    def set_alarm(self, name: str, severity: Any, alarm: Any = None) -> None:
        """Set the alarm of one of this plugin's PVs, keeping its value (see ``set_pv``)."""
        self._runtime.set_alarm(name, severity, alarm)

    def get_pv(self, name: str) -> Any:
        """The current value of one of this plugin's PVs (name without prefix)."""
        return self._runtime.get_pv(name)

    def set_message(self, message: str) -> None:
        """Show a human-readable message on MESSAGE (cut to what its stringin record holds: 39 characters)."""
        self._runtime.set_pv("MESSAGE", str(message)[:STRING_LENGTH])

    # -- hooks ---------------------------------------------------------------------
    def on_input(self, name: str, value: Any) -> None:
        """Called on the plugin thread when an operator writes an input PV."""
        self.handle_pv_write(name, value)

    def handle_pv_write(self, pv_name: str, value: Any) -> None:
        """iocmng's name for ``on_input``; override either one."""

    def snapshot(self) -> dict[str, Any]:
        """Override to keep state across restarts: called on stop, on the plugin thread,
        before ``cleanup()``; the dict (JSON-serialisable) is saved with the autosaved PVs."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Called before ``initialize()`` with what ``snapshot()`` returned at the last stop
        (only when a snapshot was saved)."""

    # -- optional Ophyd accessors kept for iocmng plugins -------------------------
    def get_device(self, device_name: str) -> object | None:
        return self.ophyd_devices.get(device_name)

    def list_devices(self) -> list[str]:
        return list(self.ophyd_devices)

    def _attach_runtime(self, runtime: PluginRuntime) -> None:
        """Called by the worker once records exist; not part of the plugin API."""
        self._runtime = runtime
