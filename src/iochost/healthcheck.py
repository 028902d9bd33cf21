"""``iochost healthcheck``: is the daemon of this container alive? (the image's HEALTHCHECK)

A probe started beside the daemon knows neither its flags nor its environment: the port may
have come from ``--port``, ``IOCHOST_PORT`` or a settings file. So it reads them where they
are, the daemon's own command line and environment (``/proc/PID``), and resolves them as
``iochost serve`` did (``Settings.from_sources``), then asks ``/api/v1/health/live``. Exit 0:
alive; 1: not, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import os
import urllib.error
import urllib.request
from pathlib import Path

PROC = Path("/proc")


class HealthcheckError(RuntimeError):
    """The daemon could not be found or asked; the message says why."""


PYTHON_OPTIONS_WITH_VALUE = ("-X", "-W")


def serve_arguments(argv: list[str]) -> list[str] | None:
    """The arguments after ``serve`` when ``argv`` is an ``iochost serve`` command line: the
    ``iochost`` script (run as itself or by its interpreter) or ``python -m iochost``; None
    for anything else (tini's ``tini -- iochost serve`` included: it only starts the daemon)."""
    if not argv:
        return None
    rest: list[str] = []
    if os.path.basename(argv[0]) == "iochost":
        rest = argv[1:]
    elif os.path.basename(argv[0]).startswith("python"):
        index = 1
        while index < len(argv) and argv[index].startswith("-") and argv[index] not in ("-m", "-c"):
            index += 2 if argv[index] in PYTHON_OPTIONS_WITH_VALUE else 1
        if argv[index:index + 2] == ["-m", "iochost"]:
            rest = argv[index + 2:]
        elif index < len(argv) and os.path.basename(argv[index]) == "iochost":
            rest = argv[index + 1:]
    return rest[1:] if rest[:1] == ["serve"] else None


def _nul_separated(path: Path) -> list[str]:
    """A /proc file of NUL-terminated strings (``cmdline``, ``environ``) as its strings."""
    return path.read_bytes().decode(errors="replace").split("\0")[:-1]


def find_daemons(proc: Path = PROC) -> list[int]:
    """The pids of every ``iochost serve`` process this one can see (a container's: one)."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = _nul_separated(entry / "cmdline")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if serve_arguments(argv) is not None:
            found.append(int(entry.name))
    return sorted(found)


def daemon_url(pid: int, proc: Path = PROC) -> str:
    """The URL of ``/api/v1/health/live`` on the daemon ``pid``, from its own flags and environment."""
    from iochost.settings import Settings
    from iochost.settings_flags import serve_flags

    try:
        argv = _nul_separated(proc / str(pid) / "cmdline")
        variables = _nul_separated(proc / str(pid) / "environ")
    except OSError as exc:
        raise HealthcheckError(f"process {pid} cannot be read: {exc.strerror}") from None
    arguments = serve_arguments(argv)
    if arguments is None:
        raise HealthcheckError(f"process {pid} is not iochost serve: {' '.join(argv)}")
    environ = dict(item.split("=", 1) for item in variables if "=" in item)
    try:
        settings = Settings.from_sources(serve_flags(arguments), environ)
    except (ValueError, OSError) as exc:
        raise HealthcheckError(f"the settings of process {pid} do not resolve: {exc}") from None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/api/v1/health/live"


def check(pid: int | None = None, timeout: float = 4.0) -> str:
    """The URL asked, once the daemon answered it with 200; HealthcheckError otherwise."""
    if pid is None:
        daemons = find_daemons()
        if len(daemons) != 1:
            raise HealthcheckError(f"{'no' if not daemons else len(daemons)} iochost serve process"
                                   f"{'es' if len(daemons) > 1 else ''} here{': give --pid' if daemons else ''}")
        pid = daemons[0]
    url = daemon_url(pid)
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=timeout) as answer:
            if answer.status != 200:
                raise HealthcheckError(f"{url} answered {answer.status}")
    except urllib.error.HTTPError as exc:
        raise HealthcheckError(f"{url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise HealthcheckError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    return url


def main(args: argparse.Namespace) -> int:
    import sys

    try:
        print(f"alive: {check(args.pid)}")
    except HealthcheckError as exc:
        print(f"iochost healthcheck: {exc}", file=sys.stderr)
        return 1
    return 0
