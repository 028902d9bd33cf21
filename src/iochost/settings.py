"""Daemon settings: one model, filled from flags, then IOCHOST_* environment variables.

Every field is a flag of ``iochost serve`` (``--data-dir``) and an environment variable
(``IOCHOST_DATA_DIR``); the flag wins. The CLI builds its parser from this model, and
docs/reference/settings.md is generated from it (``python -m iochost.reference``), so a
setting cannot exist in one place and be missing in the other.

The validators check values and read nothing; the files settings name (token files, the
beamline config, the access security file) are read in one step after, :meth:`Settings.read_files`,
which :meth:`Settings.from_sources` ends with.
"""

from __future__ import annotations

import ipaddress
import os
import re
import resource
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, field_validator, model_validator

from iochost.beamline import BeamlineConfigError, load_beamline_config
from iochost.budget import parse_rate
from iochost.config.bounds import DaemonMemoryLimitMB, DaemonOpenFilesLimit, GracePeriod
from iochost.config.limits import DaemonLimits
from iochost.config.pvnames import DEFAULT_PREFIX, pv_prefix_problem
from iochost.environ import ENV_PREFIX
from iochost.epics_server_vars import (
    CA_BEACON_PERIOD,
    CA_REPEATER_PORT,
    CA_SERVER_PORT,
    PVA_BROADCAST_PORT,
    settings_from_environ,
)
from iochost.store.policy import validate_prefixes

PORT_RANGE = r"^\d{1,5}-\d{1,5}$"
# Settings that another variable also names, read when IOCHOST_<NAME> is unset.
ENV_ALIASES = {
    "allow_source": ENV_PREFIX + "ALLOWED_SOURCES",
    "plugins_file": "IOCMNG_PLUGINS_CONFIG",  # iocmng's startup plugins.yaml
    "beamline_config": "IOCMNG_BEAMLINE_CONFIG",  # iocmng's beamline values.yaml
    "pv_gateway_pva": "IOCMNG_PVA",  # iocmng's provider of its /pvs/* client: true (PVA) or false (CA)
    "prefix": "IOCMNG_PREFIX",  # iocmng's controller prefix: PREFIX:PLUGIN:PV in both
    "host": "IOCMNG_HOST",  # iocmng's bind address (its default is every interface, iochost's loopback)
    "port": "IOCMNG_PORT",
    "log_level": "IOCMNG_LOG_LEVEL",  # iocmng writes it in either case
}
# Settings that are never flags: a command line is readable by every user in /proc.
ENV_ONLY = frozenset({"read_token", "admin_token"})


class SettingsFileError(ValueError):
    """A file a setting names that cannot be used; the message names the setting and the file
    (and, for a file that is parsed, the line and what is wrong there)."""


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/iochost`` (``~/.local/share/iochost``): survives reboots, per user."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "iochost"


# Open files kept from the API's connections when their cap is derived: each worker holds
# ~6 in the daemon (three pipes, its pidfd, its log, its cgroup), git and pip a few more.
FD_RESERVE_MIN = 256
FD_RESERVE_SHARE = 4  # and at least a quarter of the limit


def connection_cap_for(nofile: int) -> int:
    """The API's connection cap under an open-file limit of ``nofile`` (soft)."""
    if nofile == resource.RLIM_INFINITY:
        nofile = 1 << 20
    return max(16, nofile - max(FD_RESERVE_MIN, nofile // FD_RESERVE_SHARE))


def _checked_origin(origin: str) -> str:
    """A ``cors_origin`` as a browser sends it in ``Origin``: anything else would silently match
    nothing, and ``*`` is refused: naming the origins is the point of the setting."""
    if not re.fullmatch(r"https?://[^/\s:?#]+(:\d{1,5})?", origin):
        raise ValueError(f"cors_origin {origin!r} is not an origin as browsers send it: "
                         "scheme://host[:port], no path, no '*' (e.g. https://dash.example.org)")
    return origin


def _checked_pv_pattern(pattern: str) -> str:
    if not pattern or any(c.isspace() or not c.isprintable() for c in pattern):
        raise ValueError(f"pv_gateway_allow {pattern!r}: a PV name pattern has no spaces or "
                         "control characters and is not empty")
    return pattern


def _read_token_file(setting: str, path: Path) -> str:
    """The token in ``path``, without the newline secret files end with."""
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise SettingsFileError(f"{setting} {path} cannot be read by uid {os.getuid()}: {exc.strerror}") from None
    if not token:
        raise SettingsFileError(f"{setting} {path} is empty")
    return token


def _check_readable(setting: str, path: Path) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise SettingsFileError(f"{setting} {path} cannot be read by uid {os.getuid()}: {exc.strerror}") from None


def _port_range(text: str) -> tuple[int, int]:
    """``"5100-5299"`` (checked by ``PORT_RANGE``) -> (5100, 5299)."""
    low, high = (int(p) for p in text.split("-"))
    return low, high


def _from_environment(environ: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """The settings ``environ`` gives: ``IOCHOST_<NAME>``, else its alias (``ENV_ALIASES``); empty is unset."""
    values: dict[str, str] = {}
    for name in names:
        value = environ.get(ENV_PREFIX + name.upper())
        if value is None and name in ENV_ALIASES:
            value = environ.get(ENV_ALIASES[name])
        if value:
            values[name] = value
    return values


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseModel):
    model_config = {"extra": "forbid"}

    # -- the daemon ------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="REST API bind address")
    port: int = Field(default=8080, ge=0, le=65535, description="REST API port")
    prefix: str = Field(default=DEFAULT_PREFIX, max_length=20, description="PV prefix: PREFIX:PLUGIN:PV")
    data_dir: Path = Field(default_factory=default_data_dir, description="registry, checkouts and logs")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="the daemon's log level (any case)")
    log_format: Literal["text", "json"] = Field(
        default="text", description="text: one line per record (a traceback aside), every unprintable "
        "character escaped as Python writes it (\\n, \\x1b), so no text from the network (a control PV's "
        "write, a REST path, a plugin's message) adds or hides a line; json: JSON lines, escaped as JSON does")
    log_file: Path | None = Field(default=None, description="write the daemon's log to this file, rotated "
                                                             "like plugin logs (default: stderr)")
    log_rotate_bytes: int = Field(default=5 * 1024**2, ge=64 * 1024, description="size at which a plugin's "
                                  "log (and the daemon's --log-file) rotates")
    log_rotate_files: int = Field(default=3, ge=2, le=100, description="files kept per log, the current one "
                                  "included: a plugin's log takes at most log_rotate_bytes x this on disk")
    log_throttle_mb: float = Field(default=4.0, ge=0, description="MB per second a plugin's stdout and stderr may "
                                   "write, in bursts of 4 s of it, before its writes wait for the daemon "
                                   "(0: no limit)")
    plugin_log_rate: str = Field(default="100/10", description="plugin log lines forwarded into the daemon's "
                                 "log, per plugin: COUNT/SECONDS, or off (the plugin's own log keeps all)")
    examples: Path | None = Field(default=None, description="add every plugin directory under this one at start")
    plugins_file: Path | None = Field(default=None, description="YAML `plugins:` list (POST body fields, "
                                      "pat_file for tokens) added at start, changed entries upgraded")
    plugins_file_removed: Literal["keep", "delete"] = Field(
        default="keep", description="a plugin the plugins file declared whose entry has left it: keep "
        "(the operators' from then on, like one added over REST) or delete (checkout, autosaved values)")
    beamline_config: Path | None = Field(default=None, description="beamline values.yaml every plugin gets "
                                         "as beamline_config, its epicsConfiguration.iocs the devices of "
                                         "get_device(); read once at start")

    # -- EPICS ---------------------------------------------------------------------------
    epics_host: str = Field(default="127.0.0.1", description="the one interface address the CA/PVA "
                                   "servers and the CA search endpoint bind (0.0.0.0: all)")
    ca_port: int = Field(default=CA_SERVER_PORT, ge=1, le=65535, description="CA search port the daemon answers on")
    allow_shared_ca_port: bool = Field(default=False, description="start even when another CA server already "
                                       "receives name searches on --epics-host:--ca-port; a unicast search "
                                       "then reaches only one of the two (off: serve refuses, exit 2)")
    ca_beacon_port: int = Field(default=CA_REPEATER_PORT, ge=1, le=65535, description="CA repeater port beacons go to")
    ca_beacon_addrs: str = Field(default="", description="space-separated CA beacon destinations "
                                 "(host or host:port), besides the automatic ones")
    ca_auto_beacon_addrs: bool = Field(default=True, description="also send CA beacons to the broadcast "
                                       "address of the --epics-host interface (of every interface for 0.0.0.0)")
    ca_beacon_period: float = Field(default=CA_BEACON_PERIOD, gt=0,
                                    description="seconds between CA beacons at steady state")
    ca_ignore_addrs: str = Field(default="", description="space-separated client addresses whose CA "
                                 "searches get no answer, from the daemon and the workers")
    pva_port: int = Field(default=PVA_BROADCAST_PORT, ge=1, le=65535,
                          description="PVA search (UDP) port of every worker")
    worker_ports: str = Field(default="5100-5299", pattern=PORT_RANGE,
                              description="range of the workers' CA server ports (TCP and UDP)")
    worker_pva_ports: str = Field(default="5300-5499", pattern=PORT_RANGE,
                                  description="range of the workers' PVA server ports (TCP)")
    epics_table_rows: int = Field(default=100, ge=0, le=500, description="rows of the plugin table "
                                  "PREFIX:IOCHOST:ROWnnn:NAME/KIND/STATE in the daemon's own IOC")
    epics_control: bool = Field(default=False, description="serve PREFIX:IOCHOST:START, :STOP, :RESTART "
                                "(write a plugin name) and :CONTROL_MSG; Channel Access has no "
                                "authentication, so restrict them with --epics-access-security")
    epics_access_security: Path | None = Field(default=None, description="EPICS access security file (ACF) "
                                               "every worker loads: ASG IOCHOST_CONTROL guards the control "
                                               "PVs, IOCHOST_INPUTS plugin inputs, ENABLE and RUN")

    # -- supervision ---------------------------------------------------------------------
    grace_period: GracePeriod = Field(default=10.0, description="cleanup() time on stop, for plugins that set none")
    start_timeout: float = Field(default=60.0, gt=0, description="worker spawn -> initialize() returned limit")
    import_timeout: float = Field(default=30.0, gt=0, description="validation import limit")
    heartbeat_interval: float = Field(default=1.0, gt=0, description="seconds between a worker's heartbeats "
                                      "(a task's cycle_count in its REST record is as of the last one)")
    heartbeat_timeout: float = Field(default=15.0, gt=0, description="silence -> worker presumed hung")
    backoff_initial: float = Field(default=1.0, gt=0, description="seconds before a crashed plugin's first "
                                   "restart; doubled at each crash in a row")
    backoff_max: float = Field(default=60.0, gt=0, description="longest wait before a crashed plugin's restart")
    backoff_reset: float = Field(default=60.0, gt=0, description="uptime after which backoff restarts at initial")
    cancel_grace: float = Field(default=5.0, gt=0, description="cancel -> worker restart if the job ignores it")
    upgrade_probation: float = Field(default=3.0, gt=0, description="an upgraded worker exiting within this "
                                     "time after initialize() is rolled back")
    runs_kept: int = Field(default=100, ge=50, description="finished runs kept per job (GET /jobs/{name}/runs)")
    git_timeout: float = Field(default=120.0, gt=0, description="seconds a git clone or fetch may take")
    max_checkout_bytes: int = Field(default=200 * 1024**2, gt=0, description="size limit of a plugin's checkout")

    # -- security ------------------------------------------------------------------------
    read_token: SecretStr | None = Field(default=None, description="bearer token for GET endpoints")
    admin_token: SecretStr | None = Field(default=None, description="bearer token for every endpoint")
    read_token_file: Path | None = Field(default=None, description="file holding the read token")
    admin_token_file: Path | None = Field(default=None, description="file holding the admin token")
    allow_source: list[str] = Field(default_factory=list, description="allowed git URL prefixes (repeatable)")
    allow_local_sources: bool = Field(default=False, description="permit local_path and file:// sources")
    max_body_bytes: int = Field(default=1024 * 1024, gt=0, description="request body size limit")
    http_timeout: float = Field(default=10.0, gt=0, description="seconds an API connection may wait without "
                                "a request in progress (silent after connecting, idle between requests, or "
                                "still sending a request's headers) before the daemon closes it")
    http_max_connections: int = Field(default=0, ge=0, description="API connections open at once; the daemon "
                                      "closes any over it at once (0: the open-file limit less a reserve for "
                                      "workers' pipes, logs and git, see http_connection_cap)")
    add_rate: str = Field(default="30/60", description="expensive operations (add, start, restart) allowed "
                                                      "per token, or per client address without tokens: "
                                                      "COUNT/SECONDS, or off")
    cors_origin: list[str] = Field(default_factory=list, description="browser origin allowed to call the API "
                                   "across origins (CORS), e.g. https://dash.example.org (repeatable; none: "
                                   "no CORS headers at all)")

    # -- the REST PV gateway (/pvs/*) --------------------------------------------------------
    pv_gateway_pva: bool = Field(default=True, description="the PV gateway's client speaks PV Access (off: "
                                 "Channel Access)")
    pv_gateway_allow: list[str] = Field(default_factory=list, description="glob pattern of PV names the "
                                        "gateway may write (put), e.g. 'BL1:MOT*' (repeatable; none: "
                                        "this daemon's PREFIX:*)")
    pv_gateway_max_monitors: int = Field(default=100, ge=0, description="PV gateway monitors at once")
    pv_gateway_max_pending: int = Field(default=32, ge=1, le=1024, description="PV gateway gets, puts and "
                                        "monitor starts in progress at once")

    # -- plugin environments and limits ------------------------------------------------------
    requirements_timeout: float = Field(default=300.0, gt=0,
                                        description="time limit for installing a plugin's requirements.txt")
    worker_memory_mb: DaemonMemoryLimitMB = Field(default=1024, ge=0, description="per-worker memory limit in MB "
                                                  "(RLIMIT_DATA); 0: none; plugin parameter memory_limit_mb")
    worker_max_files: DaemonOpenFilesLimit = Field(default=1024, ge=0, description="per-worker open-file limit "
                                                   "(RLIMIT_NOFILE); 0: inherited; plugin parameter max_open_files")
    fork_server: bool = Field(default=True, description="start workers and validation probes from a "
                              "pre-imported template process (a fork server) instead of a fresh "
                              "interpreter each; plugins with their own requirements.txt are always spawned")
    worker_pool: int = Field(default=2, ge=0, le=32, description="warm worker processes (softioc already "
                             "imported, no plugin) the fork server keeps ready, besides one cold one for the next "
                             "validation probe; 0: fork each from the template")
    worker_realtime: bool = Field(default=False, description="let workers use real-time scheduling, and so "
                                  "let EPICS lock all their memory (mlockall: ~150 MB more per worker); "
                                  "off: workers give up CAP_SYS_NICE and CAP_IPC_LOCK first")
    worker_cgroups: bool = Field(default=True, description="run each worker in a cgroup v2 of its own where the "
                                 "hierarchy is writable, so its whole process tree ends with it (off: subreaper "
                                 "and process groups only)")

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        problem = pv_prefix_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("allow_source", "cors_origin", "pv_gateway_allow", mode="before")
    @classmethod
    def _split_sources(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allow_source")
    @classmethod
    def _check_sources(cls, value: list[str]) -> list[str]:
        validate_prefixes(value)  # a prefix that cannot be parsed would silently match nothing
        return value

    @field_validator("cors_origin")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        return [_checked_origin(origin) for origin in value]

    @field_validator("pv_gateway_allow")
    @classmethod
    def _check_pv_patterns(cls, value: list[str]) -> list[str]:
        return [_checked_pv_pattern(pattern) for pattern in value]

    @field_validator("add_rate", "plugin_log_rate")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    _beamline_values: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check_together(self) -> Settings:
        ca_ports, pva_ports = self.worker_port_range, self.worker_pva_port_range
        for name, (low, high) in (("worker_ports", ca_ports), ("worker_pva_ports", pva_ports)):
            if not 0 < low <= high <= 65535:
                raise ValueError(f"{name} {getattr(self, name)!r} is not a range LOW-HIGH within 1-65535")
        if ca_ports[0] <= pva_ports[1] and pva_ports[0] <= ca_ports[1]:
            raise ValueError(f"worker_ports {self.worker_ports} and worker_pva_ports {self.worker_pva_ports} "
                             "overlap: a CA and a PVA server cannot share a TCP port")
        if not self.auth_enabled and not is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host} without a token: anyone who reaches the API "
                "could run code; set IOCHOST_ADMIN_TOKEN (or --admin-token-file) or use --host 127.0.0.1"
            )
        return self

    def read_files(self) -> Settings:
        """A copy with the files these settings name read, once, at start: each token from its
        file (a token given directly wins), the beamline config parsed and checked (every worker
        gets the mapping read here), the access security file opened (every worker reads it at
        iocInit and refuses to serve without it). A file that cannot be used raises
        SettingsFileError naming the setting, the file and, for the beamline config, the line."""
        tokens = {f"{role}_token": SecretStr(_read_token_file(f"{role}_token_file", path))
                  for role, path in (("read", self.read_token_file), ("admin", self.admin_token_file))
                  if path is not None and getattr(self, f"{role}_token") is None}
        loaded = self.model_copy(update=tokens)
        if self.beamline_config is not None:
            try:
                loaded._beamline_values = load_beamline_config(self.beamline_config)
            except BeamlineConfigError as exc:
                raise SettingsFileError(f"beamline_config {exc}") from None
        if self.epics_access_security is not None:
            _check_readable("epics_access_security", self.epics_access_security)
        return loaded

    @property
    def auth_enabled(self) -> bool:
        """Whether the API asks for a token: one is given, or a file to read it from (until
        :meth:`read_files` has read it, no token matches: refused, never open)."""
        return any(value is not None for value in (self.admin_token, self.read_token,
                                                   self.admin_token_file, self.read_token_file))

    @property
    def beamline_values(self) -> dict[str, Any]:
        """The parsed ``beamline_config`` file (empty without one), as read at start."""
        return self._beamline_values

    @property
    def add_rate_limit(self) -> tuple[int, float] | None:
        """``(count, seconds)`` of ``add_rate``; None when rate limiting is off."""
        return parse_rate(self.add_rate)

    @property
    def pv_gateway_write_patterns(self) -> list[str]:
        """The glob patterns of PVs the gateway may put to: ``pv_gateway_allow``, else this
        daemon's own PVs."""
        return self.pv_gateway_allow or [f"{self.prefix}:*"]

    @property
    def plugin_log_limit(self) -> tuple[int, float] | None:
        """``(lines, seconds)`` of ``plugin_log_rate``; None when forwarding is unlimited."""
        return parse_rate(self.plugin_log_rate)

    @property
    def http_connection_cap(self) -> int:
        """``http_max_connections``, or when 0 the one derived from this process's open-file
        limit: the API's connections must never take the fds a worker's spawn needs."""
        return self.http_max_connections or connection_cap_for(resource.getrlimit(resource.RLIMIT_NOFILE)[0])

    @property
    def worker_port_range(self) -> tuple[int, int]:
        return _port_range(self.worker_ports)

    @property
    def worker_pva_port_range(self) -> tuple[int, int]:
        return _port_range(self.worker_pva_ports)

    @property
    def plugins_dir(self) -> Path:
        return self.data_dir / "plugins"

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "registry.json"

    @property
    def declared_path(self) -> Path:
        """The names the plugins file declared when last applied (``store.declared``)."""
        return self.data_dir / "declared.json"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def autosave_dir(self) -> Path:
        """Each plugin's saved input values and snapshot (``NAME.json``), private (0700)."""
        return self.data_dir / "autosave"

    @classmethod
    def from_sources(cls, flags: dict[str, Any], environ: dict[str, str] | None = None) -> Settings:
        """Merge flags (None = not given) over ``IOCHOST_*`` variables over the standard EPICS
        server variables (``epics_server_vars``) over defaults, then read the files they name
        (:meth:`read_files`)."""
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = _from_environment(environ, cls.model_fields)
        for name, value in flags.items():
            if value is not None and value != [] and name in cls.model_fields:
                values[name] = value
        values.update(settings_from_environ(values, environ))
        return cls.model_validate(values).read_files()


def daemon_limits(settings: Settings) -> DaemonLimits:
    """The limits a plugin that sets none runs under: the daemon's flags (0: no limit of its own)."""
    return DaemonLimits(grace_period=settings.grace_period, memory_limit_mb=settings.worker_memory_mb or None,
                        max_open_files=settings.worker_max_files or None)


def limits_outside_daemon() -> DaemonLimits:
    """``iochost run``: no daemon, so no memory or file limit; the daemon's default grace period."""
    return DaemonLimits(grace_period=Settings.model_fields["grace_period"].default,
                        memory_limit_mb=None, max_open_files=None)
