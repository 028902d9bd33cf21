"""A plugin's ophyd devices: indexed from the beamline file at worker start, created on first use.

iocmng 2.0's semantics (``IocMngController._build_device_index`` / ``get_device``): every IOC of
``epicsConfiguration.iocs`` that is not ``disable``d and has a ``devgroup`` (after merging its
``iocDefaults[template]``) gives one device per entry of its ``devices`` list, PV prefix
``iocprefix:iocroot:name`` (``iocprefix:name`` without ``iocroot``), or, without a list, one
device named after the IOC with prefix ``iocprefix``. A device name already taken is keyed
``{ioc}_{device}``. infn_ophyd_hal's DeviceFactory builds them.

Building the index connects to nothing; a device is created in the worker (never in the daemon)
the first time the plugin asks for it, then cached. Creation waits for the device's PVs, so a
device that fails (a PV that does not connect, an unknown devgroup/devtype, ophyd missing) is
logged with its name and reason and gives None: the plugin keeps running, and the device is
tried again no sooner than ``RETRY_AFTER`` seconds later.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Mapping

from iochost.beamline import DeviceSpec, build_index

log = logging.getLogger(__name__)

RETRY_AFTER = 30.0  # seconds before a device whose creation failed is tried again


def _use_softioc_libca() -> None:
    """Point pyepics (ophyd's CA layer) at the libca softioc already loaded in this process:
    one libca, not a second copy with the same symbols beside it."""
    if os.environ.get("PYEPICS_LIBCA"):
        return
    try:
        from epicscorelibs.path import get_lib
    except ImportError:
        return
    os.environ["PYEPICS_LIBCA"] = get_lib("ca")


class Devices:
    """The beamline's devices for one plugin: the index now, each device on first ``get``."""

    def __init__(self, beamline: Mapping[str, Any]) -> None:
        self.index = build_index(beamline)
        self._created: dict[str, object] = {}
        self._failed: dict[str, float] = {}  # key -> monotonic time of the last failure
        self._factory: Any = None
        self._unavailable: str | None = None  # why no device can be created, once known
        self._unknown: set[str] = set()
        self._lock = threading.Lock()
        if self.index:
            log.info("beamline config: %d device(s) available, created on first get_device()", len(self.index))

    def names(self) -> list[str]:
        """Every device key of the index, created yet or not."""
        return list(self.index)

    def get(self, name: str) -> object | None:
        """The device ``name``, created now if it was not yet; None (logged) if it cannot be."""
        with self._lock:
            if name in self._created:
                return self._created[name]
            spec = self.index.get(name)
            if spec is None:
                if name not in self._unknown:
                    self._unknown.add(name)
                    log.warning("get_device(%r): no such device in the beamline config (%d known: %s)",
                                name, len(self.index), ", ".join(sorted(self.index)[:20]) or "none")
                return None
            failed_at = self._failed.get(name)
            if failed_at is not None and time.monotonic() - failed_at < RETRY_AFTER:
                return None
            factory = self._load_factory()
            if factory is None:
                return None
            device = self._create(factory, name, spec)
            if device is None:
                self._failed[name] = time.monotonic()
            else:
                self._failed.pop(name, None)
                self._created[name] = device
            return device

    def create(self, spec: DeviceSpec) -> object | None:
        """A device outside the index (the plugin's ``create_device``), created now and not
        kept here (the plugin keeps it); None, logged, if it cannot be."""
        with self._lock:
            factory = self._load_factory()
            return None if factory is None else self._create(factory, spec.name, spec)

    def _load_factory(self) -> Any:
        """infn_ophyd_hal's DeviceFactory, imported on first use; None (logged once) without it."""
        if self._factory is not None or self._unavailable is not None:
            return self._factory
        _use_softioc_libca()
        try:
            import ophyd  # noqa: F401 - the reason below names which one is missing
        except ImportError as exc:
            self._unavailable = f"ophyd is not installed ({exc}); install iochost[ophyd]"
        else:
            try:
                from infn_ophyd_hal.device_factory import DeviceFactory

                self._factory = DeviceFactory()
            except ImportError as exc:
                self._unavailable = f"infn_ophyd_hal is not installed ({exc}); install iochost[ophyd]"
            except Exception as exc:  # noqa: BLE001 - a broken HAL must not stop the plugin
                self._unavailable = f"infn_ophyd_hal's DeviceFactory failed: {type(exc).__name__}: {exc}"
        if self._unavailable is not None:
            log.error("ophyd devices unavailable, get_device() and create_device() return None: %s",
                      self._unavailable)
        return self._factory

    def _create(self, factory: Any, key: str, spec: DeviceSpec) -> object | None:
        started = time.monotonic()
        log.info("creating device %s (%s/%s, prefix %s)", key, spec.devgroup, spec.devtype, spec.prefix)
        try:
            device = factory.create_device(devgroup=spec.devgroup, devtype=spec.devtype, prefix=spec.prefix,
                                           name=spec.name, config=dict(spec.config))
        except Exception as exc:  # noqa: BLE001 - one device's failure is its own
            log.error("device %s could not be created: %s: %s", key, type(exc).__name__, exc)
            return None
        if device is None:  # DeviceFactory logs the cause itself, and returns None
            log.error("device %s could not be created: no device class for %s/%s, or its PVs under %s "
                      "did not connect (see the error above)", key, spec.devgroup, spec.devtype, spec.prefix)
            return None
        log.info("created device %s (%s) in %.2f s", key, type(device).__name__, time.monotonic() - started)
        return device
