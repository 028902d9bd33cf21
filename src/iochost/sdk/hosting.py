"""The host's side of a plugin object: what the worker (or any host) does to a plugin, in one
place, so no code outside the SDK touches a plugin's private state.

Plugin authors never call these; the names on ``TaskBase``/``JobBase`` stay iocmng's.
"""

from __future__ import annotations

from typing import Any

from iochost.sdk.base import PluginBase
from iochost.sdk.job import JobBase
from iochost.sdk.runtime import PluginRuntime


def attach_runtime(plugin: PluginBase, runtime: PluginRuntime) -> None:
    """Route the plugin's set_pv/get_pv to ``runtime`` (the worker's records, once they exist)."""
    plugin._runtime = runtime


def attach_devices(plugin: PluginBase, devices: Any) -> None:
    """Give the plugin its beamline device index (``iochost.sdk.devices.Devices``)."""
    plugin._devices = devices


def attach_channel(plugin: PluginBase, channel: Any) -> None:
    """Hand the worker's channel to a plugin that asks for it with an ``_attach_channel(channel)``
    hook (the daemon's own status IOC sends control requests on it); others are left alone."""
    hook = getattr(plugin, "_attach_channel", None)
    if callable(hook):
        hook(channel)


def cancel_run(job: JobBase) -> None:
    """Ask the job's current run to stop: ``cancel_requested`` turns true, ``check_cancelled`` raises."""
    job._cancel.set()


def rearm_cancel(job: JobBase) -> None:
    """A new run was admitted: a cancel from before it no longer applies."""
    job._cancel.clear()
