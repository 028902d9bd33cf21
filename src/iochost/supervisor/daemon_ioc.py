"""The daemon's own soft IOC, ``{PREFIX}:IOCHOST:*``: counts and health for Phoebus.

It is an ordinary worker running the built-in DaemonStatus task, so it is supervised
(restarted with backoff) like any plugin, but it lives outside the registry and the API
listing, and its name is reserved.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from iochost import __version__
from iochost.builtin import DAEMON_STATUS_DIR
from iochost.store import PluginSource, RegistryEntry
from iochost.supervisor.states import State

SYSTEM_NAME = "iochost"
MODULE_FILE = "daemon_status.py"
CLASS_NAME = "DaemonStatus"
NAMES_LENGTH = 4000  # config.yaml's NAMES length

RUNNING_STATES = frozenset({State.RUNNING, State.PAUSED})
FAILED_STATES = frozenset({State.FAILED, State.CRASHED})


def system_entry(started_at: datetime) -> RegistryEntry:
    now = datetime.now(timezone.utc)
    return RegistryEntry(
        name=SYSTEM_NAME, kind="task", class_name=CLASS_NAME,
        source=PluginSource(local_path=str(DAEMON_STATUS_DIR)), commit=None, module_file=MODULE_FILE,
        parameters={"started_at": started_at.timestamp()}, desired_state="running",
        created_at=now, updated_at=now, options={"version": __version__},
    )


def daemon_pv_values(states: Iterable[tuple[str, State]], degraded: bool) -> dict[str, Any]:
    """The PV values for the current plugin set: what ``set_pvs`` sends to the status IOC."""
    items = sorted(states)
    names = ",".join(name for name, _ in items)
    if len(names) > NAMES_LENGTH:
        names = names[: NAMES_LENGTH - 3] + "..."
    return {
        "PLUGINS": len(items),
        "RUNNING": sum(state in RUNNING_STATES for _, state in items),
        "FAILED": sum(state in FAILED_STATES for _, state in items),
        "HEALTH": "DEGRADED" if degraded else "OK",
        "NAMES": names,
    }
