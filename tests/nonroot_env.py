"""A Python environment that an unprivileged user can run ``iochost serve`` from.

The suite's own interpreter and ``.venv`` live under root's home, which no other user may
enter, so ``tests/test_nonroot.py`` builds what the image has instead: the system's CPython
(``/usr/bin/python3``) in a venv in a world-readable scratch directory, iochost
installed from a wheel of this checkout (not editable: nothing points back into the
source tree), its dependencies at the versions of ``docker/constraints.txt`` where that
file exists, and pip, which the daemon runs for plugins' ``requirements.txt``.

Speed: pip's HTTP cache does not help here (the package index's files come without
caching headers), so the dependencies' wheels are kept in a wheelhouse of our own under
the user's cache directory and installed with ``--no-index``; it is filled (or topped up,
when a dependency changed) from the index only when that install fails. iochost is then
built and installed from a copy of the checkout with the venv's own setuptools, while
bytecode is written for what the daemon imports (see ``WARM_IMPORTS``). The root's pip
installs into the venv with ``--python``, so the venv needs no ``ensurepip`` (Debian's
separate python3-venv package is not needed).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")
CONSTRAINTS = REPO / "docker" / "constraints.txt"  # what the Dockerfile installs with
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "iochost-tests"
# Bytecode: the daemon's user cannot write __pycache__ into the venv, so without .pyc files
# every process it starts compiles what it imports. Compiling all of site-packages takes
# ~3.5 s of CPU, mostly for modules never imported (pip, setuptools, caproto, numpy's
# corners); importing what the daemon, its fork-server template and a worker import, as
# root, writes just those (~1 s more than the imports themselves). iochost's own files are
# compiled by its install.
WARM_IMPORTS = """
import iochost.server, iochost.cli, iochost.launch.member, iochost.launch.preload, iochost.launch.targets
import softioc, softioc.builder, softioc.softioc, cothread
"""


@dataclass
class Environment:
    root: Path  # world-readable; the venv and the build dir are below it
    venv: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def iochost(self) -> Path:
        """The console script, what the image's ENTRYPOINT runs."""
        return self.venv / "bin" / "iochost"


def unavailable() -> str | None:
    """Why the non-root environment cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root, to start the daemon as another user (uid 10001)"
    if not SYSTEM_PYTHON.exists():
        return f"no {SYSTEM_PYTHON}: no interpreter outside root's home for an unprivileged user"
    probe = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sys, venv; print(sys.version_info >= (3, 11))"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"{SYSTEM_PYTHON} has no venv module: {probe.stderr.strip()[-300:]}"
    if probe.stdout.strip() != "True":
        return f"{SYSTEM_PYTHON} is older than Python 3.11, which iochost requires"
    return None


def scratch_parent() -> Path:
    """Where to build the venv: /dev/shm where it is a roomy tmpfs that may hold programs
    (unpacking ~150 MB of wheels there takes half the time it takes on this machine's
    disk, mostly kernel time), else /tmp. Both are world-readable."""
    shm = Path("/dev/shm")
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
        options = next(fields[3].split(",") for fields in reversed(mounts) if fields[1] == str(shm))
        fs = os.statvfs(shm)
    except (OSError, StopIteration):
        return Path("/tmp")
    if "noexec" not in options and fs.f_bavail * fs.f_frsize >= 2 << 30 and shm.stat().st_mode & 0o1777 == 0o1777:
        return shm
    return Path("/tmp")


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _run(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    out = open(log, "wb")
    try:
        # umask 022 whatever the caller's: everything installed must be readable by the daemon's user.
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, umask=0o022,
                                env=env)
    finally:
        out.close()


def _wait(proc: subprocess.Popen, log: Path, what: str, check: bool = True) -> bool:
    code = proc.wait()
    if code != 0 and check:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{what} failed (exit {code}): {' '.join(map(str, proc.args))}\n{tail}")
    return code == 0


def build(root: Path) -> Environment:
    """The venv at ``root/venv``, with iochost and its dependencies installed."""
    started = time.monotonic()
    env = Environment(root=root, venv=root / "venv")
    os.chmod(root, 0o755)
    logs = root / "build-logs"
    logs.mkdir()
    # A copy of the project, as the Dockerfile's COPY: building leaves nothing in this tree.
    source = root / "build" / "iochost"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(env.venv)], check=True,
                   capture_output=True, umask=0o022)
    python = str(env.python)
    version = subprocess.run([python, "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"],
                             check=True, capture_output=True, text=True).stdout.strip()
    wheelhouse = CACHE / f"wheels-{version}"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    project = _project()
    requirements = ["pip", *project["project"]["dependencies"]]
    build_requirements = project["build-system"]["requires"]
    constraints = ["-c", str(CONSTRAINTS)] if CONSTRAINTS.exists() else []
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    offline = ["--no-index", "--find-links", str(wheelhouse)]
    # The build backend goes into the venv too (the image's Python has setuptools and wheel),
    # so iochost's wheel is built there without an isolated build environment (~2 s less).
    install_deps = [*pip, "--python", python, "install", "--no-compile", *offline, *constraints,
                    *requirements, *build_requirements]
    env.timings["prepare"] = time.monotonic() - started

    # Exclusive: one session at a time fills or reads the shared wheelhouse.
    with open(CACHE / f"wheels-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        t = time.monotonic()
        log = logs / "dependencies.log"
        if not (any(wheelhouse.glob("*.whl")) and _wait(_run(install_deps, log), log, "", check=False)):
            # First run, or a dependency the wheelhouse lacks: fetch from the index, then again.
            env.timings["offline attempt"] = time.monotonic() - t
            t = time.monotonic()
            download = [*pip, "--python", python, "wheel", "-w", str(wheelhouse),
                        *constraints, *requirements, *build_requirements]
            _wait(_run(download, logs / "download.log"), logs / "download.log", "filling the wheelhouse")
            env.timings["download"] = time.monotonic() - t
            t = time.monotonic()
            _wait(_run(install_deps, log), log, "installing the dependencies")
        env.timings["dependencies"] = time.monotonic() - t

    t = time.monotonic()
    install_iochost = [*pip, "--python", python, "install", "--no-deps", "--no-index", "--no-build-isolation",
                       str(source)]
    iochost = _run(install_iochost, logs / "iochost.log")
    # Meanwhile, bytecode for the dependencies the daemon's processes import, from the copy.
    warm = _run([python, "-c", WARM_IMPORTS], logs / "bytecode.log",
                env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(source / "src"), "OPENBLAS_NUM_THREADS": "1"})
    _wait(iochost, logs / "iochost.log", "installing iochost")
    if not _wait(warm, logs / "bytecode.log", "", check=False):  # only speed is lost: say so, go on
        print(f"nonroot_env: no bytecode for the daemon's imports:\n{(logs / 'bytecode.log').read_text()[-2000:]}")
    env.timings["iochost + bytecode"] = time.monotonic() - t
    env.timings["total"] = time.monotonic() - started
    return env
