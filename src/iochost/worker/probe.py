"""Stages 2-5 inside a throw-away process: parse and discover the plugin class, import it,
inspect it, then check what only the imported plugin shows: expressions calling the
functions it registered, and its records, built as its worker builds them (without
iocInit). Everything that reads the plugin's code happens here, not in the daemon.

``python -m iochost.worker.probe REQUEST_FILE`` (a JSON file: it holds parameters) prints one JSON object
``{"kind", "class_name", "module_file", "issues": [...]}`` on its stdout and nothing
else: the plugin's own prints go to stderr. It limits its own memory (RLIMIT_DATA) first
and imports exactly as the worker does (iocmng alias + ``iochost.loader``); softioc is
imported only to build the records, after everything else passed. SIGUSR1 dumps every
thread's stack to stderr, which is how a hang is located.
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

from iochost.kinds import Kind


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


def inspect_class(cls: Any, root: Path, module_file: str, class_name: str) -> tuple[Kind | None, list[dict[str, Any]]]:
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
    kind: Kind
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


def _import_failures(root: Path, files: list[str]) -> list[dict[str, Any]]:
    """When no plugin class was found: the modules that define classes, imported, and the
    error of each that fails. ``from iochost import Taskbase`` hides the plugin class from
    discovery; its ImportError, at its line, is the cause to show first."""
    from iochost.loader import import_plugin_module

    issues = []
    for module_file in files:
        try:
            import_plugin_module(root, module_file)
        except BaseException as exc:  # noqa: BLE001 - SystemExit at import time is a finding too
            issues.append(import_issue(exc, root, module_file))
    return issues


def probe(request: dict[str, Any]) -> dict[str, Any]:
    from iochost.loader import load_plugin_class
    from iochost.plugin_source.code import read_code

    root = Path(os.path.realpath(request["plugin_dir"]))
    found = read_code(root, request.get("class_name"))
    if found.class_name is None or found.module_file is None:
        issues = [issue.model_dump(mode="json") for issue in found.issues]
        return {"kind": None, "issues": _import_failures(root, found.class_files) + issues}
    module_file, class_name = found.module_file, found.class_name
    result: dict[str, Any] = {"kind": None, "class_name": class_name, "module_file": module_file}
    try:
        cls = load_plugin_class(root, module_file, class_name)
    except BaseException as exc:  # noqa: BLE001 - SystemExit at import time is a finding too
        return {**result, "issues": [import_issue(exc, root, module_file)]}
    kind, issues = inspect_class(cls, root, module_file, class_name)
    if kind is not None and not issues and request.get("check_config"):
        issues = check_config(root, kind, request)
    return {**result, "kind": kind, "issues": issues}


def check_config(root: Path, kind: Kind, request: dict[str, Any]) -> list[dict[str, Any]]:
    """What only the imported plugin can show: expressions calling functions its import did not
    register (warnings: its initialize() may still register them, the worker checks after it),
    and the records, built exactly as its worker builds them (all but iocInit) so that a config
    that validates also starts. Softioc's builder is imported here, in this throw-away process
    (a cold member of the fork server has it imported already)."""
    from iochost.config import ConfigError, load_config, plugin_mode
    from iochost.config.calls import registration_warnings
    from iochost.config.issues import config_issue
    from iochost.config.pvnames import check_pv_names, plugin_pv_prefix
    from iochost.rule_language.functions import get_registry
    from iochost.worker.records import RecordError, build_records

    try:
        # a task's worker checks the functions again after initialize(), which may register some
        config = load_config(root, check_functions=kind != "task").with_parameters(request.get("parameters") or {})
    except ConfigError as exc:
        return [issue.model_dump(mode="json") for issue in exc.issues]
    warned = registration_warnings(config, get_registry()) if kind == "task" else []
    warnings = [issue.model_dump(mode="json") for issue in warned]
    mode = plugin_mode(kind, config.parameters)
    if check_pv_names(request["prefix"], request["name"], kind, mode, config.pvs, segment=config.prefix):
        return warnings  # records need their names; the caller's own name check reports these
    try:
        build_records(plugin_pv_prefix(request["prefix"], request["name"], config.prefix), kind, mode, config.pvs,
                      "", lambda name, value: None)
    except RecordError as exc:
        path = ("pvs", *exc.path)
        issue = config_issue(path, exc.reason, config.key_lines, display=(config.pv_section, *exc.path))
        return [issue.model_dump(mode="json"), *warnings]
    return warnings


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m iochost.worker.probe REQUEST_FILE")
    request = json.loads(Path(argv[0]).read_text())  # a file: the parameters stay off the command line
    from iochost.worker.rlimits import set_rlimits

    set_rlimits(request.get("memory_limit_mb"), None)  # before any plugin file is parsed
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
