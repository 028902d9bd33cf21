"""What the displays are called and what a row of the index holds (the display catalog): no pvi here, so the
daemon imports it at start and loads the generator only when it first renders a display."""

from __future__ import annotations

from dataclasses import dataclass

from iochost.kinds import Kind
from iochost.sdk.status import JobStatus, TaskStatus

INDEX_FILE = "index.bob"


def display_file(name: str) -> str:
    """The file name of a plugin's display, relative to the index."""
    return f"{name}.bob"


@dataclass(frozen=True)
class IndexRow:
    """One plugin of the index: its name, kind and table row (1-based; None: table full), and
    the PV prefix its PVs have (None: ``PREFIX:NAME``, its name's)."""

    name: str
    kind: Kind
    row: int | None
    pv_prefix: str | None = None


def status_names(kind: Kind) -> list[str]:
    """The STATUS record's states, by index: the worker builds the mbbi from the same enum."""
    return [member.name for member in (TaskStatus if kind == "task" else JobStatus)]


def _states(kind: Kind) -> str:
    return " / ".join(status_names(kind))


def default_pv_labels(kind: Kind) -> dict[str, tuple[str, str]]:
    """Label and tooltip of each default PV (the Phoebus panel's and the web page's); a job's
    STATUS and MESSAGE are its last result."""
    if kind == "job":
        return {
            "STATUS": ("Last result", f"STATUS of the last run: {_states(kind)}"),
            "MESSAGE": ("Last message", "MESSAGE of the last run"),
            "RUN": ("Run", "Write 1 to run the job once"),
        }
    return {
        "ENABLE": ("Enabled", "ENABLE: 0 pauses the task"),
        "STATUS": ("Status", f"STATUS: {_states(kind)}"),
        "MESSAGE": ("Message", "MESSAGE: the last message"),
        "CYCLE_COUNT": ("Cycles", "CYCLE_COUNT: completed executions"),
        "VERSION": ("Version", "VERSION: the plugin's commit or label"),
        "RUN": ("Run", "Write 1 to trigger one execution"),
        "CLEAR": ("Clear latches", "Write 1 to release latched outputs"),
        "RESET": ("Reset", "Write 1 to clear latches, reset the cycle count and re-check links"),
        "CONN_INP": ("Inputs connected", "1 per wired input (CONN_INP_NAMES order) whose link is connected"),
        "CONN_INP_NAMES": ("Wired inputs", "names of the wired inputs, in CONN_INP order"),
        "CONN_OUT": ("Outputs connected", "1 per wired output (CONN_OUT_NAMES order) whose link is connected"),
        "CONN_OUT_NAMES": ("Wired outputs", "names of the wired outputs, in CONN_OUT order"),
    }
