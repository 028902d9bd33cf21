"""Stages 2-5 inside a throw-away process: parse and discover the plugin class, import it,
then inspect it. Everything that reads the plugin's code happens here, not in the daemon.

``python -m iochost.validate.probe REQUEST_JSON`` prints one JSON object
``{"kind", "class_name", "module_file", "issues": [...]}`` on its stdout and nothing
else: the plugin's own prints go to stderr. It limits its own memory (RLIMIT_DATA) first,
imports exactly as the worker does (iocmng alias + ``iochost.loader``) and never imports
softioc, so it stays small and quick. SIGUSR1 dumps every thread's stack to stderr, which
is how a hang is located.
"""

from __future__ import annotations

import faulthandler
import inspect
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any


def _relative(filename: str | None, root: Path) -> str | None:
    """``filename`` relative to the plugin dir (posix), or None when it is outside it."""
    if not filename:
        return None
    try:
        return Path(os.path.realpath(filename)).relative_to(root).as_posix()
    except ValueError:
        return None


def _issue(stage: str, message: str, file: str | None, line: int | None) -> dict[str, Any]:
    return {"stage": stage, "file": file, "line": line, "message": message}


def import_issue(exc: BaseException, root: Path, module_file: str) -> dict[str, Any]:
    """The error at the last traceback frame inside the plugin (the line to fix)."""
    file, line = None, None
    for frame in traceback.extract_tb(exc.__traceback__):
        relative = _relative(frame.filename, root)
        if relative is not None:
            file, line = relative, frame.lineno
    if isinstance(exc, SyntaxError) and _relative(exc.filename, root):
        file, line = _relative(exc.filename, root), exc.lineno
    text = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return _issue("import", text, file or module_file, line)


def inspect_class(cls: Any, root: Path, module_file: str, class_name: str) -> tuple[str | None, list[dict[str, Any]]]:
    """Kind of the real class, and what keeps it from being instantiated by the worker."""
    from iochost.sdk import JobBase, TaskBase

    file, line = module_file, None
    try:
        file = _relative(inspect.getsourcefile(cls), root) or module_file
        line = inspect.getsourcelines(cls)[1]
    except (TypeError, OSError):
        pass
    if not isinstance(cls, type):
        return None, [_issue("inheritance", f"{class_name} is a {type(cls).__name__}, not a class", file, line)]
    if issubclass(cls, TaskBase):
        kind = "task"
    elif issubclass(cls, JobBase):
        kind = "job"
    else:
        bases = ", ".join(base.__name__ for base in cls.__mro__[1:-1]) or "object"
        return None, [_issue("inheritance", f"{class_name} derives from neither TaskBase nor JobBase "
                                            f"(its bases: {bases})", file, line)]
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if abstract:
        names = ", ".join(f"{name}()" for name in abstract)
        return None, [_issue("inheritance", f"{class_name} leaves abstract method(s) unimplemented: {names}",
                             file, line)]
    return kind, []


def probe(request: dict[str, Any]) -> dict[str, Any]:
    from iochost.loader import load_plugin_class
    from iochost.validate.code import read_code

    root = Path(os.path.realpath(request["plugin_dir"]))
    found = read_code(root, request.get("class_name"))
    if found.class_name is None or found.module_file is None:
        return {"kind": None, "issues": [issue.model_dump(mode="json") for issue in found.issues]}
    module_file, class_name = found.module_file, found.class_name
    result: dict[str, Any] = {"kind": None, "class_name": class_name, "module_file": module_file}
    try:
        cls = load_plugin_class(root, module_file, class_name)
    except BaseException as exc:  # noqa: BLE001 - SystemExit at import time is a finding too
        return {**result, "issues": [import_issue(exc, root, module_file)]}
    kind, issues = inspect_class(cls, root, module_file, class_name)
    return {**result, "kind": kind, "issues": issues}


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m iochost.validate.probe REQUEST_JSON")
    request = json.loads(argv[0])
    from iochost.worker.limits import apply_limits

    apply_limits(request.get("memory_limit_mb"), None)  # before any plugin file is parsed
    result_fd = os.dup(1)
    os.dup2(2, 1)  # whatever the plugin prints must not corrupt the result
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    result = probe(request)
    sys.stdout.flush()
    sys.stderr.flush()
    with os.fdopen(result_fd, "w") as out:
        json.dump(result, out)
    os._exit(0)  # threads the plugin started at import must not keep the probe alive


if __name__ == "__main__":
    main(sys.argv[1:])
