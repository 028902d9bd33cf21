"""The standard EPICS server variables an operator may set for the daemon, and what each becomes.

Sites configure CA and PVA servers with ``EPICS_CAS_*`` and ``EPICS_PVAS_*`` variables,
and they reach the daemon too (a shell profile, a container's environment). iochost
never ignores one silently. ``VARIABLES`` is the one table; each variable is

- a **setting**: the same fact as an iochost setting. It is used when the setting is
  not given by flag or ``IOCHOST_*`` variable; given both ways and different, the daemon
  refuses to start and names both. The client variables that rsrv and pvxs fall back on
  (``EPICS_CA_SERVER_PORT``, ...) count only when no server variable is set, and lose to
  an explicit setting with a warning, since a site sets them for its clients;
- **passed**: it reaches every worker unchanged (workers inherit the daemon's
  environment, and iochost sets nothing over it);
- **refused**: it names what iochost assigns per worker (a TCP port), so one value for
  every worker cannot be honoured; the message names the setting to use instead.

An ``EPICS_CAS_*`` or ``EPICS_PVAS_*`` variable not in the table is refused too: a
misspelt variable would otherwise do nothing without a word.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Literal, Mapping

log = logging.getLogger("iochost.epics")

Kind = Literal["host", "port", "bool", "list", "seconds"]


@dataclass(frozen=True)
class Variable:
    name: str
    handling: Literal["setting", "passed", "refused"]
    setting: str | None = None  # the iochost setting it is (handling == "setting")
    kind: Kind = "list"
    fallback: bool = False  # a client variable the server falls back on
    why: str = ""  # for refused variables: what to use instead


VARIABLES: tuple[Variable, ...] = (
    # rsrv, the workers' CA servers; the daemon answers their searches and beacons
    Variable("EPICS_CAS_INTF_ADDR_LIST", "setting", "epics_host", "host"),
    Variable("EPICS_CAS_SERVER_PORT", "setting", "ca_port", "port"),
    Variable("EPICS_CA_SERVER_PORT", "setting", "ca_port", "port", fallback=True),
    Variable("EPICS_CAS_BEACON_ADDR_LIST", "setting", "ca_beacon_addrs", "list"),
    Variable("EPICS_CAS_AUTO_BEACON_ADDR_LIST", "setting", "ca_auto_beacon_addrs", "bool"),
    Variable("EPICS_CAS_BEACON_PORT", "setting", "ca_beacon_port", "port"),
    Variable("EPICS_CA_REPEATER_PORT", "setting", "ca_beacon_port", "port", fallback=True),
    Variable("EPICS_CAS_BEACON_PERIOD", "setting", "ca_beacon_period", "seconds"),
    Variable("EPICS_CAS_IGNORE_ADDR_LIST", "setting", "ca_ignore_addrs", "list"),
    # pvxs, the workers' PVA servers; they answer PVA searches themselves
    Variable("EPICS_PVAS_INTF_ADDR_LIST", "setting", "epics_host", "host"),
    Variable("EPICS_PVAS_BROADCAST_PORT", "setting", "pva_port", "port"),
    Variable("EPICS_PVA_BROADCAST_PORT", "setting", "pva_port", "port", fallback=True),
    Variable("EPICS_PVAS_BEACON_ADDR_LIST", "passed"),
    Variable("EPICS_PVAS_AUTO_BEACON_ADDR_LIST", "passed"),
    Variable("EPICS_PVAS_BEACON_PERIOD", "passed"),
    Variable("EPICS_PVAS_IGNORE_ADDR_LIST", "passed"),
    Variable("EPICS_PVAS_SERVER_PORT", "refused",
             why="every worker serves PVA on a port of its own: set the range with --worker-pva-ports"),
    Variable("EPICS_PVAS_TLS_PORT", "refused",
             why="every worker would need a PVA TLS port of its own; iochost assigns none"),
)
BY_NAME = {variable.name: variable for variable in VARIABLES}

# EPICS's own defaults of the variables above (rsrv, libca, pvxs), and so iochost's: a daemon
# nobody configured answers where every EPICS client looks.
CA_SERVER_PORT = 5064  # EPICS_CA_SERVER_PORT: where CA name searches go
CA_REPEATER_PORT = 5065  # EPICS_CA_REPEATER_PORT: where CA beacons go
CA_BEACON_PERIOD = 15.0  # EPICS_CAS_BEACON_PERIOD: seconds between CA beacons at steady state
PVA_BROADCAST_PORT = 5076  # EPICS_PVA_BROADCAST_PORT: where PVA searches go
LOOPBACK_BROADCAST = "127.255.255.255"  # where beacons of a server on loopback go: lo has no broadcast address
WILDCARD = "0.0.0.0"  # a server on every interface: what rsrv and pvxs do with no interface list
SERVER_PREFIXES = ("EPICS_CAS_", "EPICS_PVAS_")


def interface_list(host: str) -> str:
    """``EPICS_CAS_INTF_ADDR_LIST``/``EPICS_PVAS_INTF_ADDR_LIST`` for a server on ``host``:
    empty (EPICS's own default, every interface) for the wildcard, else the address itself."""
    return "" if host in (WILDCARD, "") else host


def serving_address(environ: Mapping[str, str], protocol: Literal["CAS", "PVAS"] = "CAS") -> str:
    """The address a server started with ``environ`` listens on: the first of its interface
    list, else every interface (an unset or empty list)."""
    return (environ.get(f"EPICS_{protocol}_INTF_ADDR_LIST") or WILDCARD).split()[0]


class EpicsVariableError(ValueError):
    """An EPICS server variable the daemon cannot honour, or one that contradicts a setting."""


def _normalise(variable: Variable, text: str) -> object:
    """The value an EPICS server would read from ``text``, in the setting's terms."""
    value = text.strip()
    if variable.kind == "port":
        try:
            port = int(value)
        except ValueError:
            port = -1
        if not 0 < port < 65536:
            raise EpicsVariableError(f"{variable.name}={text!r} is not a port number (1-65535)")
        return port
    if variable.kind == "seconds":
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if seconds <= 0:
            raise EpicsVariableError(f"{variable.name}={text!r} is not a positive number of seconds")
        return seconds
    if variable.kind == "bool":
        if value.upper() not in ("YES", "NO"):
            raise EpicsVariableError(f"{variable.name}={text!r}: EPICS reads YES or NO")
        return value.upper() == "YES"
    if variable.kind == "host":
        entries = value.split()
        if len(entries) != 1:
            raise EpicsVariableError(
                f"{variable.name}={text!r}: the daemon and its workers serve one interface address "
                "(or 0.0.0.0 for all), which --epics-host names; give exactly one address")
        try:
            return str(ipaddress.IPv4Address(entries[0]))
        except ValueError:
            raise EpicsVariableError(f"{variable.name}={text!r} is not one IPv4 address (no port)") from None
    return " ".join(value.split())


def _setting_text(kind: Kind, value: object) -> object:
    """An explicit setting in the form ``_normalise`` gives, so the two can be compared."""
    if kind == "port":
        return int(str(value))
    if kind == "seconds":
        return float(str(value))
    if kind == "bool":
        return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")
    return " ".join(str(value).split())


def settings_from_environ(explicit: Mapping[str, object], environ: Mapping[str, str]) -> dict[str, object]:
    """Settings the EPICS variables in ``environ`` provide, where ``explicit`` (flags and
    ``IOCHOST_*``) leaves them unset; raises EpicsVariableError for what is refused."""
    refusals: list[str] = []
    taken: dict[str, tuple[str, object]] = {}  # setting -> (variable, value) of a server variable
    fallbacks: dict[str, tuple[str, object]] = {}
    for name in sorted(environ):
        variable = BY_NAME.get(name)
        if variable is None:
            if name.startswith(SERVER_PREFIXES):
                refusals.append(f"{name} is not an EPICS server variable iochost knows "
                                f"(known: {', '.join(v.name for v in VARIABLES if not v.fallback)})")
            continue
        if variable.handling == "refused":
            refusals.append(f"{name} cannot be honoured: {variable.why}")
            continue
        if variable.handling == "passed" or environ[name].strip() == "":
            continue
        assert variable.setting is not None
        try:
            value = _normalise(variable, environ[name])
        except EpicsVariableError as exc:
            refusals.append(str(exc))
            continue
        into = fallbacks if variable.fallback else taken
        other = into.get(variable.setting)
        if other is not None and other[1] != value:
            refusals.append(f"{other[0]}={environ[other[0]]!r} and {name}={environ[name]!r} disagree; "
                            "both name the same thing for the daemon")
        into[variable.setting] = (name, value)
    values: dict[str, object] = {}
    for setting, (name, value) in taken.items():
        kind = BY_NAME[name].kind
        if setting in explicit and _setting_text(kind, explicit[setting]) != value:
            refusals.append(f"{name}={environ[name]!r} disagrees with the setting {setting}="
                            f"{explicit[setting]!r} (flag --{setting.replace('_', '-')} or "
                            f"IOCHOST_{setting.upper()}): set one of them")
        elif setting not in explicit:
            values[setting] = value
    for setting, (name, value) in fallbacks.items():
        if setting in taken:
            continue
        kind = BY_NAME[name].kind
        if setting in explicit:
            if _setting_text(kind, explicit[setting]) != value:
                log.warning("%s=%s (a client variable) is not used for the daemon: %s=%s is set",
                            name, environ[name], setting, explicit[setting])
        else:
            values[setting] = value
    if refusals:
        raise EpicsVariableError("; ".join(refusals))
    return values
