"""Stages 4-5 from the caller's side: run the probe in its own process group, with a deadline.

Importing user code can do anything: hang, exit, crash the interpreter, spawn children.
None of it may reach the daemon, so it happens in a short-lived subprocess whose whole
process group is killed when the deadline passes. Before killing, SIGUSR1 makes the probe
dump its stacks, so a hang is reported at the plugin line it was stuck on.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Literal

import iochost
from iochost.procgroup import kill_group
from iochost.validate.report import Stage, ValidationIssue

Kind = Literal["task", "job"]
DUMP_WAIT = 0.5  # time the probe gets to write its stack dump before SIGKILL
_FRAME = re.compile(r'^\s*File "(?P<file>.+)", line (?P<line>\d+)')
_PROBE_FILE = "iochost/validate/probe.py"


def _probe_env() -> dict[str, str]:
    from iochost.settings import plugin_environ

    env = plugin_environ()  # the probe runs plugin code: no API token
    env["OPENBLAS_NUM_THREADS"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave no __pycache__ in the checkout
    source_root = str(Path(iochost.__file__).resolve().parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if source_root not in paths:  # the probe must import this very iochost
        env["PYTHONPATH"] = os.pathsep.join([source_root, *paths])
    return env


def _dumped_location(stderr: str, root: Path) -> tuple[str, int] | None:
    """The innermost plugin frame of the main thread in a faulthandler dump."""
    blocks: list[list[tuple[str, int]]] = [[]]
    for text in stderr.splitlines():
        match = _FRAME.match(text)
        if match:
            blocks[-1].append((match["file"], int(match["line"])))
        elif text.strip():
            blocks.append([])
    main = [b for b in blocks if any(f.replace(os.sep, "/").endswith(_PROBE_FILE) for f, _ in b)]
    for block in main + blocks:
        for filename, line in block:  # most recent call first
            try:
                return Path(os.path.realpath(filename)).relative_to(root).as_posix(), line
            except ValueError:
                continue
    return None


def _tail(stderr: str, lines: int = 3) -> str:
    kept = [line for line in stderr.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(line.strip() for line in kept)


def probe_plugin(
    plugin_dir: Path, module_file: str, class_name: str, timeout: float, python: str | None = None
) -> tuple[Kind | None, list[ValidationIssue]]:
    """Import the class in a subprocess (run by ``python``, default this interpreter);
    the real kind, or import/inheritance issues."""
    root = Path(os.path.realpath(plugin_dir))
    request = json.dumps({"plugin_dir": str(root), "module_file": module_file, "class_name": class_name})
    proc = subprocess.Popen(
        [python or sys.executable, "-m", "iochost.validate.probe", request],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=_probe_env(), start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.kill(proc.pid, signal.SIGUSR1)
            proc.communicate(timeout=DUMP_WAIT)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
        kill_group(proc)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a grandchild escaped the group and holds the pipes
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            proc.wait()
            out, err = b"", b""
    finally:
        kill_group(proc)  # children the plugin started at import time go too
    stderr = err.decode(errors="replace")

    if timed_out:
        where = _dumped_location(stderr, root)
        at = f"; it was at {where[0]}:{where[1]}" if where else ""
        file, line = where if where else (module_file, None)
        return None, [ValidationIssue(stage=Stage.IMPORT, file=file, line=line,
                                      message=f"import did not finish within {timeout:g} s{at}")]
    try:
        result = json.loads(out.decode(errors="replace"))
    except ValueError:
        where = _dumped_location(stderr, root)
        file, line = where if where else (module_file, None)
        cause = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        return None, [ValidationIssue(stage=Stage.IMPORT, file=file, line=line,
                                      message=f"import ended the process ({cause}): {_tail(stderr)}")]
    issues = [ValidationIssue.model_validate(issue) for issue in result["issues"]]
    return result["kind"], issues
