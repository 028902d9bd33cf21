"""PV naming: ``{PREFIX}:{SEGMENT}:{PV}``, the default PVs, and the legality rules.

SEGMENT is config.yaml's ``prefix:`` when it has one, else the plugin name upper-cased
(iocmng's PLUGIN_PREFIX; what a legal one is, ``schema.segment_problem``, is checked with
its field). The daemon, the worker and the validator all name PVs through this module, so a
name the validator accepts is exactly the record the worker creates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from iochost.kinds import Kind
from iochost.report import Stage, ValidationIssue

if TYPE_CHECKING:
    from iochost.config.schema import PVGroup

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


def default_pv_names(kind: Kind, mode: str | None = None, pvs: PVGroup | None = None) -> list[str]:
    """The PVs every plugin of ``kind`` gets, in the order the worker creates them: a
    task's CLEAR and RESET (iocmng 2.7: release latches; and restart counting), and, when
    ``pvs`` has wired PVs, the per-port connection waveforms CONN_INP / CONN_OUT with
    CONN_INP_NAMES / CONN_OUT_NAMES naming the ports in the same order."""
    if kind == "job":
        return ["STATUS", "MESSAGE", "RUN"]
    names = ["ENABLE", "STATUS", "MESSAGE", "CYCLE_COUNT", "VERSION"]
    if mode == "triggered":
        names.append("RUN")
    names += ["CLEAR", "RESET"]
    for group, pv in (("inputs", "CONN_INP"), ("outputs", "CONN_OUT")):
        if wired_ports(pvs, group):
            names += [pv, f"{pv}_NAMES"]
    return names


def wired_ports(pvs: PVGroup | None, group: str) -> list[str]:
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
    pvs: PVGroup,
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
