"""What tasks and jobs share: identity, parameters, logger and PV access."""

from __future__ import annotations

import datetime
import logging
import time
from abc import ABC
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from iochost.record_sizes import STRING_LENGTH
from iochost.sdk.channelfinder import DEFAULT_TIMEOUT as CF_DEFAULT_TIMEOUT
from iochost.sdk.channelfinder import ChannelFinderClient
from iochost.sdk.runtime import MemoryRuntime, PluginRuntime

# The PV prefix the worker names a plugin's records with, while it constructs the plugin:
# an ``__init__`` of the plugin's own reads the real ``pv_prefix`` (config.yaml's ``prefix:``
# segment, ``iochost run --module --prefix``'s whole prefix), not one the worker corrects later.
_HOSTED_PV_PREFIX: ContextVar[str | None] = ContextVar("iochost_hosted_pv_prefix", default=None)


@contextmanager
def hosted_pv_prefix(pv_prefix: str) -> Iterator[None]:
    """Plugins constructed within get ``pv_prefix`` from their first line of ``__init__`` on."""
    token = _HOSTED_PV_PREFIX.set(pv_prefix)
    try:
        yield
    finally:
        _HOSTED_PV_PREFIX.reset(token)


class PluginBase(ABC):  # noqa: B024 - the abstract methods are TaskBase's and JobBase's
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
        self.pv_prefix = _HOSTED_PV_PREFIX.get() or (f"{prefix}:{name.upper()}" if prefix else name.upper())
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

    # iocmng 2.7's names: inputs and outputs are PVs like any other
    def get_input(self, pv_name: str) -> Any:
        return self.get_pv(pv_name)

    def get_output(self, pv_name: str) -> Any:
        return self.get_pv(pv_name)

    def set_input(self, pv_name: str, value: Any) -> None:
        self.set_pv(pv_name, value)

    def set_output(self, pv_name: str, value: Any) -> None:
        """Set an output; a wired one (``link:``) is also written to its linked PV."""
        self.set_pv(pv_name, value)

    def link_put(self, key: str, value: Any, timeout: float = 5.0) -> None:
        """Write ``value`` to the external PV of the wired input or output ``key``, without
        waiting (the write is asynchronous; a newer value replaces one not yet sent).
        ``timeout`` is kept for iocmng's signature: the config's ``timeout`` applies.
        KeyError if ``key`` is not wired."""
        put = getattr(self._runtime, "link_put", None)
        if put is None:
            raise KeyError(f"{key!r} is not a wired PV (this plugin has no link:)")
        put(key, value)

    def get_datetime(self) -> str:
        """Local time as iocmng gives it: ``YYYY-MM-DD HH:MM:SS.mmm``."""
        return datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]

    def get_timems(self) -> int:
        """Milliseconds since the epoch."""
        return int(time.time() * 1000)

    def set_message(self, message: str) -> None:
        """Show a human-readable message on MESSAGE (cut to what its stringin record holds: 39 characters)."""
        self._runtime.set_pv("MESSAGE", str(message)[:STRING_LENGTH])

    # -- hooks ---------------------------------------------------------------------
    def on_input(self, name: str, value: Any) -> None:
        """Called on the plugin thread when an operator writes an input PV."""
        self.handle_pv_write(name, value)

    def handle_pv_write(self, pv_name: str, value: Any) -> None:  # noqa: B027 - an optional hook
        """iocmng's name for ``on_input``; override either one."""

    def snapshot(self) -> dict[str, Any]:
        """Override to keep state across restarts: called on stop, on the plugin thread,
        before ``cleanup()``; the dict (JSON-serialisable) is saved with the autosaved PVs."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:  # noqa: B027 - an optional hook
        """Called before ``initialize()`` with what ``snapshot()`` returned at the last stop
        (only when a snapshot was saved)."""

    # -- optional Ophyd accessors kept for iocmng plugins -------------------------
    def get_device(self, device_name: str) -> object | None:
        """The ophyd device ``device_name`` of the beamline config (``--beamline-config``),
        created on this first call (it waits for the device's PVs) and the same object after.
        None, with the reason logged, if it is not in the config, cannot be created, or
        ophyd / infn_ophyd_hal are not installed (``iochost[ophyd]``)."""
        if device_name in self.ophyd_devices:
            return self.ophyd_devices[device_name]
        devices = getattr(self, "_devices", None)
        return devices.get(device_name) if devices is not None else None

    def list_devices(self) -> list[str]:
        """Names ``get_device`` knows: every device of the beamline config's
        ``epicsConfiguration.iocs`` (not disabled, with a devgroup; a repeated name is
        ``{ioc}_{device}``), created yet or not, plus any passed in as ``ophyd_devices``."""
        devices = getattr(self, "_devices", None)
        names = list(self.ophyd_devices)
        return names + [n for n in (devices.names() if devices is not None else []) if n not in names]

    def create_device(self, prefix: str, devgroup: str, devtype: str, name: str | None = None,
                      cache: bool = True) -> object | None:
        """An ophyd device of infn_ophyd_hal's DeviceFactory for a PV prefix that need not be in
        the beamline config (iocmng's ``create_device``): ``devgroup``/``devtype`` pick its class
        (``mot``/``asyn``, ``io``/``ai``, ...), ``name`` defaults to the prefix's last segment.
        With ``cache`` the device is kept under ``name``: the same object on the next call, and
        ``get_device(name)`` / ``list_devices()`` know it. Creation waits for the device's PVs.
        None, with the reason logged, if it cannot be created or ophyd / infn_ophyd_hal are not
        installed (``iochost[ophyd]``)."""
        for argument, value in (("prefix", prefix), ("devgroup", devgroup), ("devtype", devtype)):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"create_device: {argument} must be a non-empty string, got {value!r}")
        device_name = name or prefix.rsplit(":", 1)[-1]
        if cache and device_name in self.ophyd_devices:
            return self.ophyd_devices[device_name]
        from iochost.beamline import DeviceSpec

        devices = getattr(self, "_devices", None)
        if devices is None:  # not hosted by a worker: devices of no beamline config
            from iochost.sdk.devices import Devices

            devices = self._devices = Devices({})
        device = devices.create(DeviceSpec(devgroup, devtype, prefix, device_name))
        if device is not None and cache:
            self.ophyd_devices[device_name] = device
        return device

    # -- ChannelFinder (iocmng 2.4+), on with the ``channelfinder_url`` parameter -------------
    @property
    def channelfinder(self) -> ChannelFinderClient | None:
        """The client of the ``channelfinder_url`` parameter's service (``channelfinder_timeout``
        seconds per request); None when the parameter is not set."""
        if not hasattr(self, "_cf_client"):
            url = self.parameters.get("channelfinder_url")
            timeout = self.parameters.get("channelfinder_timeout", CF_DEFAULT_TIMEOUT)
            self._cf_client = ChannelFinderClient(url, timeout) if url else None
        return self._cf_client

    def _cf(self, helper: str) -> ChannelFinderClient | None:
        client = self.channelfinder
        if client is None and not getattr(self, "_cf_said_off", False):
            self._cf_said_off = True
            self.logger.warning("%s: ChannelFinder is off (no channelfinder_url parameter); "
                                "the cf_* helpers find nothing", helper)
        return client

    def cf_search(self, **filters: Any) -> list[dict[str, Any]]:
        """ChannelFinder's channels matching ``filters`` (``name``, ``iocName``, ``devgroup``,
        ``devtype``, ``zone``, ``tag``, ``size``, any other property; globs allowed), each
        ``{name, owner, properties: [{name, value, owner}], tags}``. [] when ChannelFinder is
        off; ChannelFinderError (naming the URL) when the service fails."""
        client = self._cf("cf_search")
        return [] if client is None else client.search(**filters)

    def cf_discover_devices(self, **filters: Any) -> list[dict[str, Any]]:
        """The devices of the channels matching ``filters`` (those of ``cf_search`` but ``tag``
        and ``size``), each a descriptor ``{name, devgroup, devtype, prefix, iocname, template,
        properties, pvs}`` for ``cf_create_device``. [] when ChannelFinder is off."""
        client = self._cf("cf_discover_devices")
        return [] if client is None else client.discover_devices(**filters)

    def cf_create_device(self, device_descriptor: dict[str, Any], cache: bool = True) -> object | None:
        """``create_device`` for a descriptor of ``cf_discover_devices`` (its ``name``,
        ``devgroup``, ``devtype``, ``prefix``); None, logged, if one of those is empty."""
        fields = {key: device_descriptor.get(key) or "" for key in ("name", "devgroup", "devtype", "prefix")}
        missing = [key for key, value in fields.items() if not value]
        if missing:
            self.logger.warning("cf_create_device: the descriptor has no %s: %r", ", ".join(missing),
                                device_descriptor)
            return None
        return self.create_device(prefix=fields["prefix"], devgroup=fields["devgroup"],
                                  devtype=fields["devtype"], name=fields["name"], cache=cache)
