"""PV naming: ``{PREFIX}:{SEGMENT}:{PV}``, the default PVs, and the legality rules.

SEGMENT is config.yaml's ``prefix:`` when it has one, else the plugin name upper-cased
(iocmng's PLUGIN_PREFIX; what a legal one is, ``segment_problem``, the schema checks with
its field). The daemon, the worker and the validator all name PVs through this module, so a
name the validator accepts is exactly the record the worker creates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from iochost.kinds import Kind
from iochost.report import Stage, ValidationIssue


class DeclaredPV(Protocol):
    """What the naming rules read of one declared PV (``config.PVDef``)."""

    @property
    def wired(self) -> bool: ...


class DeclaredPVs(Protocol):
    """What the naming rules read of config.yaml's ``pvs:`` (``config.DeclaredPVs``, which is
    checked with these rules: so the rules see it through this face)."""

    @property
    def inputs(self) -> Mapping[str, DeclaredPV]: ...

    @property
    def outputs(self) -> Mapping[str, DeclaredPV]: ...

DEFAULT_PREFIX = "IOCHOST"
# A plugin name is a directory name (the store) and the middle of every PV name (here);
# 40 leaves room for a prefix and a PV within MAX_PV_NAME. The API, the store and the PV
# checks all use this pattern.
PLUGIN_NAME_LENGTH = 40
PLUGIN_NAME_PATTERN = rf"^[A-Za-z0-9_-]{{1,{PLUGIN_NAME_LENGTH}}}$"
MAX_PV_NAME = 60  # PVNAME_STRINGSZ is 61 including the NUL

# Characters EPICS allows in record names; '.' is not one (it separates the field name).
RECORD_NAME_RE = re.compile(r"^[A-Za-z0-9_\-+:\[\]<>;]+$")
# A declared PV's own name: an identifier, optionally with ':' or '-' separated parts.
PV_SHORT_NAME_RE = re.compile(r"^[A-Za-z0-9_]+(?:[:-][A-Za-z0-9_]+)*$")
# config.yaml's ``prefix:``: one or more parts of letters, digits, '_' and '-', joined by ':'.
SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]+(?::[A-Za-z0-9_-]+)*")


def segment_problem(segment: str) -> str | None:
    """Why config.yaml's ``prefix:`` cannot be the plugin's part of its PV names, or None."""
    if not SEGMENT_RE.fullmatch(segment):
        return (f"{segment!r} is not a legal PV name segment; use letters, digits, '_' and '-' "
                "(':' between parts; no spaces, no '.', no leading or trailing ':')")
    return None


def plugin_segment(name: str, segment: str | None = None) -> str:
    """The plugin's part of its PV names: config.yaml's ``prefix:``, else the name upper-cased."""
    return segment or name.upper()


def plugin_pv_prefix(prefix: str, name: str, segment: str | None = None) -> str:
    """``IOCHOST:MY-PLUGIN``: the device name every PV of a plugin starts with."""
    return f"{prefix}:{plugin_segment(name, segment)}"


def full_pv_name(prefix: str, name: str, pv: str, segment: str | None = None) -> str:
    return f"{plugin_pv_prefix(prefix, name, segment)}:{pv}"


def same_segment(one: str, other: str) -> bool:
    """Whether two segments (or whole PV prefixes) name the same PVs for an operator: PV
    names are case-sensitive, but two that differ only in case cannot be told apart."""
    return one.upper() == other.upper()


def nested_segment(one: str, other: str) -> bool:
    """Whether one PV prefix lies inside the other (``BL:X`` and ``BL:X:Y``, case aside): a
    PV of the outer one (``Y:STATUS``) can then be named like one of the inner one's, and a
    CA search reaches only one of the two servers."""
    a, b = one.upper() + ":", other.upper() + ":"
    return a != b and (a.startswith(b) or b.startswith(a))


DefaultShape = Literal["switch", "command", "state", "text", "number"]
Presence = Literal["always", "task", "run", "wired_inputs", "wired_outputs"]


@dataclass(frozen=True)
class DefaultPV:
    """One default PV: its name, the kind of record it is and which plugins have it. The
    worker builds its record from this, the display its widget, the validator its name."""

    name: str
    # switch: operators write 0/1 and it stays (ENABLE); command: operators write 1 and the
    # worker sets it back to 0 once done; state: an mbbi of the status; text: a stringin whose
    # values are cut to STRING_LENGTH; number: a count or per-port flags
    shape: DefaultShape
    present: Presence  # run: a job, or a triggered task; wired_*: a task with wired inputs/outputs
    states: tuple[str, str] | None = None  # a switch's or command's bo: its ZNAM and ONAM

    @property
    def writable(self) -> bool:
        """Operators write it (the worker acts on the write)."""
        return self.shape in ("switch", "command")


# Every default PV, in the order the worker creates them.
DEFAULT_PVS: tuple[DefaultPV, ...] = (
    DefaultPV("ENABLE", "switch", "task", ("Disabled", "Enabled")),
    DefaultPV("STATUS", "state", "always"),
    DefaultPV("MESSAGE", "text", "always"),
    DefaultPV("CYCLE_COUNT", "number", "task"),
    DefaultPV("VERSION", "text", "task"),
    DefaultPV("RUN", "command", "run", ("Idle", "Run")),
    DefaultPV("CLEAR", "command", "task", ("Idle", "Clear")),
    DefaultPV("RESET", "command", "task", ("Idle", "Reset")),
    DefaultPV("CONN_INP", "number", "wired_inputs"),
    DefaultPV("CONN_INP_NAMES", "text", "wired_inputs"),
    DefaultPV("CONN_OUT", "number", "wired_outputs"),
    DefaultPV("CONN_OUT_NAMES", "text", "wired_outputs"),
)
DEFAULT_PV = {pv.name: pv for pv in DEFAULT_PVS}


def default_pv_names(kind: Kind, mode: str | None = None, pvs: DeclaredPVs | None = None) -> list[str]:
    """The PVs every plugin of ``kind`` gets, in the order the worker creates them: a
    task's CLEAR and RESET (iocmng 2.7: release latches; and restart counting), and, when
    ``pvs`` has wired PVs, the per-port connection waveforms CONN_INP / CONN_OUT with
    CONN_INP_NAMES / CONN_OUT_NAMES naming the ports in the same order."""
    task = kind != "job"
    present = {
        "always": True,
        "task": task,
        "run": not task or mode == "triggered",
        "wired_inputs": task and bool(wired_ports(pvs, "inputs")),
        "wired_outputs": task and bool(wired_ports(pvs, "outputs")),
    }
    return [pv.name for pv in DEFAULT_PVS if present[pv.present]]


def wired_ports(pvs: DeclaredPVs | None, group: str) -> list[str]:
    """The wired inputs or outputs, in config order: the element order of CONN_INP/CONN_OUT."""
    if pvs is None:
        return []
    return [name for name, pv in getattr(pvs, group).items() if pv.wired]


def pv_prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot start EPICS record names, or None when it can: the daemon's
    ``--prefix`` setting and the PV name checks both ask this."""
    if not prefix or not RECORD_NAME_RE.fullmatch(prefix) or prefix.endswith(":"):
        return (f"PV prefix {prefix!r} must be non-empty, use only A-Z a-z 0-9 _ - + : [ ] < > ; "
                "and not end with ':'")
    return None


def _issue(message: str, line: int | None = None, file: str | None = None) -> ValidationIssue:
    return ValidationIssue(stage=Stage.PVS, file=file, line=line, message=message)


def check_pv_names(
    prefix: str,
    name: str,
    kind: Kind | None,
    mode: str | None,
    pvs: DeclaredPVs,
    *,
    lines: Mapping[tuple[str, ...], int] | None = None,
    section: str = "pvs",
    segment: str | None = None,
    device: str | None = None,
) -> list[ValidationIssue]:
    """Every problem with the plugin's full PV names. ``kind=None`` (unknown yet) skips
    only the collision check with default PVs; ``lines`` maps ``("pvs", group, PV)`` to
    config.yaml lines. ``segment`` is config.yaml's ``prefix:``; ``device``, when given, is
    the whole PV prefix (``iochost run --module ... --prefix``: iocmng-run's is complete)."""
    issues: list[ValidationIssue] = []
    if not re.fullmatch(PLUGIN_NAME_PATTERN, name):
        issues.append(_issue(f"plugin name {name!r} must be 1-{PLUGIN_NAME_LENGTH} letters, digits, '_' or '-'"))
    prefix_problem = pv_prefix_problem(prefix)
    if prefix_problem is not None:
        issues.append(_issue(prefix_problem))
    base = device or plugin_pv_prefix(prefix, name, segment)
    shorten = "the prefix" if device else "the prefix or config.yaml's prefix:" if segment else \
        "the prefix or the plugin name"
    defaults = default_pv_names(kind, mode, pvs) if kind is not None else []
    for pv in defaults:
        full = f"{base}:{pv}"
        if len(full) > MAX_PV_NAME:
            issues.append(_issue(f"default PV {full} is {len(full)} characters, more than {MAX_PV_NAME}; "
                                 f"shorten {shorten}"))
    reserved = {pv.upper(): pv for pv in defaults}
    seen: dict[str, str] = {}
    file = "config.yaml"  # declared PVs always come from it
    owner = f"{mode} {kind}" if kind == "task" and mode else f"{kind}"
    for group, declared in (("inputs", pvs.inputs), ("outputs", pvs.outputs)):
        for pv in declared:
            where = f"{section}.{group}.{pv if pv.isprintable() else repr(pv)}"
            line = (lines or {}).get(("pvs", group, pv))
            full = f"{base}:{pv}"
            if not PV_SHORT_NAME_RE.fullmatch(pv):
                issues.append(_issue(f"{where}: {pv!r} is not a legal PV name; use letters, digits and '_' "
                                     "(':' or '-' between parts; no spaces, no '.')", line, file))
            elif len(full) > MAX_PV_NAME:
                issues.append(_issue(f"{where}: {full} is {len(full)} characters, more than {MAX_PV_NAME}",
                                     line, file))
            if pv.upper() in reserved:
                issues.append(_issue(f"{where}: {pv} collides with the default PV {reserved[pv.upper()]} "
                                     f"of a {owner}", line, file))
            elif pv.upper() in seen and seen[pv.upper()] != pv:
                issues.append(_issue(f"{where}: {pv} differs only in case from {seen[pv.upper()]}; "
                                     "operators cannot tell them apart", line, file))
            seen.setdefault(pv.upper(), pv)
    return issues
