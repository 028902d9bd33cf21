"""The daemon's own soft IOC, ``{PREFIX}:IOCHOST:*``: counts, health, a table of the plugins
and (with ``--epics-control``) START / STOP / RESTART for Phoebus.

It is an ordinary worker running the built-in DaemonStatus task, so it is supervised
(restarted with backoff) like any plugin, but it lives outside the registry and the API
listing, and its name is reserved. Records cannot be created after iocInit, so what it
serves is decided by the settings when the daemon starts: ``system_config`` is the one
list of its PVs, written as the task's config.yaml into ``DATA_DIR/system/iochost``.
"""

from __future__ import annotations

import logging
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from iochost import __version__
from iochost.builtin import DAEMON_STATUS_DIR
from iochost.config.pvnames import PLUGIN_NAME_LENGTH, PLUGIN_NAME_PATTERN
from iochost.contract.worker_spec import AccessSecurity
from iochost.durable import write_atomically
from iochost.errors import ErrorCode, IochostError
from iochost.record_sizes import STRING_LENGTH
from iochost.settings import Settings
from iochost.store import DESIRED_RUNNING, PluginSource, RegistryEntry
from iochost.supervisor.states import State

log = logging.getLogger("iochost.supervisor")

SYSTEM_NAME = "iochost"
MODULE_FILE = "daemon_status.py"
CLASS_NAME = "DaemonStatus"
NAMES_LENGTH = 4000  # the NAMES PV's length

RUNNING_STATES = frozenset({State.RUNNING, State.PAUSED})
FAILED_STATES = frozenset({State.FAILED, State.CRASHED})

# The table: ROWnnn:NAME / :KIND / :STATE. A free row shows no name and "deleted".
ROW_FIELDS = ("NAME", "KIND", "STATE")
EMPTY_ROW_STATE = State.DELETED
STATE_SEVERITIES = {State.FAILED: "MAJOR", State.CRASHED: "MAJOR", State.STOPPED: "MINOR",
                    State.STOPPING: "MINOR"}

# The control PVs (--epics-control): a plugin name written to one asks for that action.
CONTROL_PVS = {"START": "start", "STOP": "stop", "RESTART": "restart"}
# They are long strings (char arrays) with room past the longest plugin name, so a longer
# write, which the record cuts to what it holds, still reads as longer than any name and is
# refused, never taken for the name it was cut to: 4 bytes more keep that true for a cut
# made between UTF-8 characters (one is at most 4 bytes).
CONTROL_LENGTH = PLUGIN_NAME_LENGTH + 4
CONTROL_MSG = "CONTROL_MSG"
CONTROL_VERBS = {"start": ("starting", "started"), "stop": ("stopping", "stopped"),
                 "restart": ("restarting", "restarted")}  # CONTROL_MSG while it runs, and after
# The access security group (ASG) of START / STOP / RESTART; plugin inputs, ENABLE and RUN
# carry worker/records.py's INPUTS_ASG. A group the ACF leaves out falls back to DEFAULT.
CONTROL_GROUP = "IOCHOST_CONTROL"


def row_pv(row: int, field: str) -> str:
    """The short PV name of one table cell: ``ROW007:STATE``."""
    return f"ROW{row:03d}:{field}"


def system_config(settings: Settings) -> dict[str, Any]:
    """The daemon IOC's config.yaml as data: the one list of what ``{PREFIX}:IOCHOST:*`` serves."""
    outputs: dict[str, Any] = {
        "PLUGINS": {"type": "int", "description": "Plugins registered"},
        "RUNNING": {"type": "int", "description": "Plugins running or paused"},
        "FAILED": {"type": "int", "description": "Plugins failed or crashed"},
        "HEALTH": {"type": "enum", "choices": ["OK", "DEGRADED"], "value": "OK", "description": "Daemon health",
                   "alarm": {"DEGRADED": "MINOR"}},
        "UPTIME": {"type": "float", "unit": "s", "prec": 0, "description": "Seconds since the daemon started"},
        "NAMES": {"type": "string", "length": NAMES_LENGTH, "description": "Plugin names, comma-separated"},
        "ROWS": {"type": "int", "value": settings.epics_table_rows, "description": "Rows of the plugin table"},
    }
    states = [state.value for state in State]
    alarm = {state.value: severity for state, severity in STATE_SEVERITIES.items()}
    for row in range(1, settings.epics_table_rows + 1):
        outputs[row_pv(row, "NAME")] = {"type": "string"}
        outputs[row_pv(row, "KIND")] = {"type": "string"}
        outputs[row_pv(row, "STATE")] = {"type": "enum", "choices": states, "value": EMPTY_ROW_STATE.value,
                                         "alarm": alarm}
    pvs: dict[str, Any] = {"outputs": outputs}
    if settings.epics_control:
        pvs["inputs"] = {pv: {"type": "string", "length": CONTROL_LENGTH,
                              "description": f"Write a plugin name to {action} it", "autosave": False}
                         for pv, action in CONTROL_PVS.items()}
        outputs[CONTROL_MSG] = {"type": "string", "description": "Outcome of the last control request"}
    return {"parameters": {"mode": "continuous", "interval": 1.0, "retry_on_error": True}, "pvs": pvs}


def write_system_plugin(settings: Settings) -> Path:
    """Blocking: write the daemon IOC's plugin directory (config.yaml from the settings and
    the task's module) under ``DATA_DIR/system``, fresh at every start; its path."""
    folder = settings.data_dir / "system" / SYSTEM_NAME
    folder.mkdir(parents=True, exist_ok=True)
    text = ("# Generated by iochost at every start from its settings; edits are overwritten.\n"
            + yaml.dump(system_config(settings), Dumper=_NoAliases, sort_keys=False, default_flow_style=None,
                        width=200))
    for name, content in (("config.yaml", text), (MODULE_FILE, (DAEMON_STATUS_DIR / MODULE_FILE).read_text())):
        path, data = folder / name, content.encode()
        if not (path.is_file() and path.read_bytes() == data):  # unchanged: nothing to write (a full disk)
            write_atomically(path, data, file_mode=0o644)
    shutil.rmtree(folder / "__pycache__", ignore_errors=True)  # never a stale compiled copy
    return folder


class _NoAliases(yaml.SafeDumper):
    """Every row spelled out: no ``&id``/``*id`` (the config reader caps aliases)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def system_entry(started_at: datetime, plugin_dir: Path) -> RegistryEntry:
    now = datetime.now(timezone.utc)
    return RegistryEntry(
        name=SYSTEM_NAME, kind="task", class_name=CLASS_NAME,
        source=PluginSource(local_path=str(plugin_dir)), commit=None, module_file=MODULE_FILE,
        parameters={"started_at": started_at.timestamp(), "control_pvs": CONTROL_PVS}, desired_state=DESIRED_RUNNING,
        created_at=now, updated_at=now, options={"version": __version__},
    )


def worker_access_security(settings: Settings, name: str) -> AccessSecurity | None:
    """What a worker's spec says about access security: the ACF, and for the daemon's own
    worker the control PVs' group. None without ``--epics-access-security``."""
    if settings.epics_access_security is None:
        return None
    groups = {pv: CONTROL_GROUP for pv in CONTROL_PVS} if name == SYSTEM_NAME and settings.epics_control else {}
    return AccessSecurity(file=str(settings.epics_access_security.resolve()), groups=groups)


def daemon_pv_values(states: Iterable[tuple[str, State]], degraded: bool) -> dict[str, Any]:
    """The summary PVs for the current plugin set: what ``set_pvs`` sends to the status IOC."""
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


def row_values(rows: Mapping[str, int], plugins: Mapping[str, tuple[str, State]], size: int) -> dict[str, Any]:
    """Every table cell: ``rows`` (name -> row) of ``plugins`` (name -> (kind, state)); the
    other rows empty."""
    values: dict[str, Any] = {}
    for row in range(1, size + 1):
        values.update({row_pv(row, "NAME"): "", row_pv(row, "KIND"): "", row_pv(row, "STATE"): EMPTY_ROW_STATE.value})
    for name, row in rows.items():
        kind, state = plugins[name]
        values.update({row_pv(row, "NAME"): name, row_pv(row, "KIND"): kind, row_pv(row, "STATE"): state.value})
    return values


def control_target(text: str) -> str:
    """The plugin a write to a control PV names, in full; else IochostError(INVALID_REQUEST)
    saying why it names none (the message starts with the reason, as CONTROL_MSG shows 39
    characters). A text longer than any name may be the record's cut of a longer write, so it
    is refused, never shortened; the text is quoted with repr, so a control character in it
    is shown escaped wherever the message goes (the log, CONTROL_MSG, events)."""
    if len(text) > PLUGIN_NAME_LENGTH:
        raise IochostError(ErrorCode.INVALID_REQUEST,
                           f"name over {PLUGIN_NAME_LENGTH} characters: {text!r} ({len(text)} read; the PV cuts "
                           "a longer write, so no name is taken from it)", field="plugin")
    if not text.isprintable():
        raise IochostError(ErrorCode.INVALID_REQUEST, f"control character in name: {text!r}", field="plugin")
    if re.fullmatch(PLUGIN_NAME_PATTERN, text) is None:
        raise IochostError(ErrorCode.INVALID_REQUEST,
                           f"not a plugin name: {text!r} (1-{PLUGIN_NAME_LENGTH} letters, digits, '_' or '-')",
                           field="plugin")
    return text


def short_text(text: str) -> str:
    """A control outcome as CONTROL_MSG (a stringin) holds it; the whole text is in the log."""
    return text if len(text) <= STRING_LENGTH else text[: STRING_LENGTH - 3] + "..."


class RowTable:
    """Which plugin owns which table row (sans-I/O).

    A plugin takes the lowest free row when it appears and keeps it while it exists; when
    the table is full it waits (logged once) and takes the first row freed, in the order
    the waiting plugins appeared.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._rows: dict[str, int] = {}
        self._waiting: list[str] = []

    def rows(self) -> dict[str, int]:
        return dict(self._rows)

    def appear(self, name: str) -> int | None:
        if name in self._rows:
            return self._rows[name]
        free = self._lowest_free()
        if free is None:
            if name not in self._waiting:
                self._waiting.append(name)
                log.warning("%s: no row in the daemon IOC's plugin table (all %d taken; --epics-table-rows); "
                            "it gets the first one freed", name, self.size)
            return None
        self._rows[name] = free
        return free

    def release(self, name: str) -> None:
        if name in self._waiting:
            self._waiting.remove(name)
        if self._rows.pop(name, None) is not None and self._waiting:
            self.appear(self._waiting.pop(0))

    def _lowest_free(self) -> int | None:
        taken = set(self._rows.values())
        return next((row for row in range(1, self.size + 1) if row not in taken), None)
