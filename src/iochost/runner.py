"""``run_ioc`` and ``iochost run --module``: iocmng-run's two ways in, on iochost's worker.

iocmng 2.x runs a standalone plugin from a class (``run_ioc``, a library call that blocks)
or from an importable module (``iocmng-run --module``). Both end here, in
``run_plugin_class``, which builds the same ``WorkerSpec`` ``iochost run DIR`` builds and
runs the same ``worker.main.run_worker`` in this process: only the way to the class and to
config.yaml differs. PV names follow iocmng-run's rule: ``--prefix`` is the whole PV prefix
(config.yaml's ``prefix:`` is not appended); without it, ``BEAMLINE:DEFAULT:SEGMENT``.

Light on imports on purpose: ``iochost`` and the ``iocmng`` alias export ``run_ioc``, and
the daemon imports ``iochost``; the worker is imported only when a plugin runs.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from iochost.contract.exits import WorkerExit

if TYPE_CHECKING:
    from iochost.contract.worker_spec import WorkerLogLevel, WorkerSpec
    from iochost.kinds import Kind
    from iochost.report import ValidationIssue

# iocmng-run without --prefix: a plugin's default controller prefix is its beamline config's
# beamline and namespace, which run_ioc never passes, so their defaults (iocmng 2.7.9).
IOCMNG_RUN_PREFIX = "BEAMLINE:DEFAULT"
INVALID = 1  # the plugin's config or PV names are refused: `iochost run DIR`'s exit code for a failed validation


class RunError(Exception):
    """The plugin cannot be run: what is wrong, and the exit code ``iochost run`` ends with."""

    def __init__(self, message: str, code: int = WorkerExit.FATAL) -> None:
        super().__init__(message)
        self.code = code


def import_plugin_module(module: str, directory: Path) -> ModuleType:
    """Import ``module`` as iocmng-run does (``directory``, its current directory, first on
    sys.path), with ``import iocmng`` resolving to iochost's SDK."""
    from iochost.compat import install_iocmng_alias

    install_iocmng_alias()
    root = str(directory.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise RunError(f"module {module!r} not found in {root} or on sys.path (--module takes a module "
                           "name such as my_task or pkg.my_task, not a file path)") from None
        raise RunError(f"importing {module!r} failed: {type(exc).__name__}: {exc}") from exc
    except BaseException as exc:  # whatever the plugin's import raises (SystemExit too) is the cause to show
        frames = traceback.extract_tb(exc.__traceback__)
        at = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        raise RunError(f"importing {module!r} failed{at}: {type(exc).__name__}: {exc}") from exc


def plugin_class_in(module: ModuleType, class_name: str | None = None) -> type:
    """The plugin class of ``module``: ``class_name``, or the one concrete TaskBase/JobBase
    subclass it defines (or, defining none, the one it imports). Several are refused, naming
    them: iocmng-run would take the first in alphabetical order, a silent guess."""
    from iochost.sdk import JobBase, TaskBase

    def is_plugin(obj: object) -> bool:
        return (isinstance(obj, type) and issubclass(obj, (TaskBase, JobBase)) and not inspect.isabstract(obj)
                and not obj.__module__.startswith("iochost."))

    if class_name:
        cls = getattr(module, class_name, None)
        if cls is None:
            found = sorted(name for name, obj in vars(module).items() if is_plugin(obj))
            raise RunError(f"module {module.__name__!r} has no class {class_name!r}; plugin classes in it: "
                           f"{', '.join(found) or '(none)'}")
        if not (isinstance(cls, type) and issubclass(cls, (TaskBase, JobBase))):
            raise RunError(f"{module.__name__}.{class_name} is not a TaskBase or JobBase subclass")
        if inspect.isabstract(cls):
            raise RunError(f"{module.__name__}.{class_name} is abstract (missing "
                           f"{', '.join(sorted(cls.__abstractmethods__))})")
        return cls
    candidates = {name: obj for name, obj in vars(module).items() if is_plugin(obj)}
    own = {name: obj for name, obj in candidates.items() if obj.__module__ == module.__name__}
    chosen = own or candidates
    if not chosen:
        abstract = sorted(f"{name} (missing {', '.join(sorted(obj.__abstractmethods__))})"
                          for name, obj in vars(module).items()
                          if isinstance(obj, type) and issubclass(obj, (TaskBase, JobBase)) and inspect.isabstract(obj)
                          and obj.__module__ == module.__name__)
        if abstract:
            raise RunError(f"module {module.__name__!r} has no complete plugin class: {'; '.join(abstract)}")
        raise RunError(f"module {module.__name__!r} has no TaskBase or JobBase subclass")
    if len(chosen) > 1:
        raise RunError(f"module {module.__name__!r} has {len(chosen)} plugin classes ({', '.join(sorted(chosen))}); "
                       "choose one with --class-name")
    return next(iter(chosen.values()))


def class_location(plugin_class: type) -> tuple[Path, str]:
    """The directory a class's module was imported from and its file relative to it: the
    worker's plugin directory (its files are "the plugin's own" in a traceback)."""
    module = sys.modules.get(plugin_class.__module__)
    file = getattr(module, "__file__", None)
    if not file:
        raise RunError(f"{plugin_class.__qualname__} is not defined in a file (module "
                       f"{plugin_class.__module__!r}); define it in a module or a script")
    path = Path(file).resolve()
    depth = 0 if plugin_class.__module__ == "__main__" else plugin_class.__module__.count(".")
    depth += path.name == "__init__.py"
    root = path.parents[depth]
    return root, path.relative_to(root).as_posix()


def _config_file(config: str | Path | dict[str, Any] | None, scratch: Path) -> Path:
    """The config.yaml the worker reads: the given file, or the given mapping (or nothing:
    iocmng's empty config) written to a file of ``scratch``, so one loader reads them all."""
    import yaml

    if isinstance(config, (str, Path)):
        return Path(config).resolve()
    if config is not None and not isinstance(config, dict):
        raise RunError(f"config must be a config.yaml path or a mapping, not {type(config).__name__}", INVALID)
    path = scratch / "config.yaml"
    path.write_text(yaml.safe_dump(dict(config or {}), sort_keys=False))
    return path


def check_pvout(pvout: str | Path) -> None:
    """Refuse a ``--pvout`` that cannot be written before the IOC starts, not once it serves:
    its directory is made (as iocmng-run does) and a scratch file written and removed there."""
    path = Path(pvout)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "is a directory", str(path))
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}."):
            pass
    except FileExistsError as exc:  # a file where its directory should be
        raise RunError(f"--pvout {pvout}: cannot write it: {exc.filename} is not a directory") from None
    except OSError as exc:
        raise RunError(f"--pvout {pvout}: cannot write it: {exc.strerror or exc}"
                       f"{f' ({exc.filename})' if exc.filename else ''}") from None


def write_pv_list(pvout: str | Path, pvs: list[str]) -> None:
    """``--pvout``: the PV names, sorted, one a line, as iocmng-run writes them."""
    path = Path(pvout)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{pv}\n" for pv in sorted(pvs)))


def run_plugin_class(
    plugin_class: type,
    *,
    config: str | Path | dict[str, Any] | None = None,
    parameters: dict[str, Any] | None = None,
    prefix: str | None = None,
    pva: bool = True,
    name: str | None = None,
    pvout: str | Path | None = None,
    log_level: WorkerLogLevel = "INFO",
    version: str = "local",
    grace: float | None = None,
    autosave: str | Path | None = None,
    beamline_config: dict[str, Any] | None = None,
) -> int:
    """Run ``plugin_class`` as a soft IOC until SIGINT/SIGTERM; the worker's exit code, or
    ``INVALID`` (1) after printing every problem of its config.yaml and PV names."""
    from iochost.config import ConfigError, load_config, plugin_mode
    from iochost.config.limits import resolve_limits
    from iochost.config.pvnames import check_pv_names
    from iochost.contract.worker_spec import WorkerSpec
    from iochost.sdk import JobBase, TaskBase
    from iochost.settings import limits_outside_daemon

    if not (isinstance(plugin_class, type) and issubclass(plugin_class, (TaskBase, JobBase))):
        raise RunError(f"{plugin_class!r} is not a TaskBase or JobBase subclass")
    plugin_dir, module_file = class_location(plugin_class)
    name = name or plugin_class.__name__.lower()  # iocmng-run's default IOC name
    overrides = {**(parameters or {}), "pva": pva}  # iocmng: the provider is run_ioc's, whatever config says
    with tempfile.TemporaryDirectory(prefix="iochost-run-") as scratch:
        config_file = _config_file(config, Path(scratch))
        shown = str(config) if isinstance(config, (str, Path)) else "config"
        try:
            loaded = load_config(plugin_dir, file=config_file).with_parameters(overrides)
        except ConfigError as exc:
            _print_issues(exc.issues, shown)
            return INVALID
        kind: Kind = "task" if issubclass(plugin_class, TaskBase) else "job"
        mode = plugin_mode(kind, loaded.parameters)
        issues = check_pv_names(prefix or IOCMNG_RUN_PREFIX, name, kind, mode, loaded.pvs,
                                lines=loaded.key_lines, section=loaded.pv_section, segment=loaded.prefix,
                                device=prefix)
        if issues:
            _print_issues(issues, shown)
            return INVALID
        limits = resolve_limits(loaded.parameters, limits_outside_daemon(), grace)  # as the daemon does
        spec = WorkerSpec(
            name=name, plugin_dir=str(plugin_dir), module_file=module_file, class_name=plugin_class.__qualname__,
            prefix=IOCMNG_RUN_PREFIX, pv_prefix=prefix or None, config_file=str(config_file),
            parameters=overrides, version=version, grace_period=limits.grace_period,
            memory_limit_mb=limits.memory_limit_mb, max_open_files=limits.max_open_files,
            autosave_file=str(Path(autosave).resolve()) if autosave else None,
            beamline_config=beamline_config or {}, log_level=log_level,
        )
        return run_spec(spec, plugin_class, pvout)


def run_spec(spec: WorkerSpec, plugin_class: type | None = None, pvout: str | Path | None = None) -> int:
    """``run_worker`` in this process, writing ``pvout`` once the records exist; what the
    plugin started ends with it, as under the daemon. ``iochost run DIR`` comes here too."""
    from iochost.proctree import kill_descendants
    from iochost.worker.main import run_worker

    if threading.current_thread() is not threading.main_thread():
        raise RunError("run_ioc must be called from the main thread: EPICS's dispatcher and the stop "
                       "signals (SIGINT, SIGTERM) are handled there")
    records = sys.modules.get("softioc.pythonSoftIoc")
    if records is not None and records.RecordWrapper.is_builder_reset():
        raise RunError("this process already started a soft IOC: EPICS cannot create records after "
                       "iocInit, so each plugin runs in a process of its own (iochost serve hosts many)")
    if pvout is not None:
        check_pvout(pvout)
    on_ready = None if pvout is None else (lambda pvs: write_pv_list(pvout, pvs))
    try:
        return run_worker(spec, plugin_class, on_ready)
    finally:
        kill_descendants()


def _print_issues(issues: list[ValidationIssue], config: str) -> None:
    """Every issue, config.yaml's named as the file given (``--config prod.yaml``)."""
    from iochost.config.issues import CONFIG_FILE

    for issue in issues:
        print(issue.model_copy(update={"file": config}) if issue.file == CONFIG_FILE else issue, file=sys.stderr)
    print(f"FAILED: {len(issues)} error{'s' if len(issues) != 1 else ''}", file=sys.stderr)


class RunFailed(RuntimeError):
    """``run_ioc``'s plugin could not run, or its worker ended with an error."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def run_ioc(
    plugin_class: type,
    *,
    config: str | Path | dict[str, Any] | None = None,
    parameters: dict[str, Any] | None = None,
    prefix: str | None = None,
    pva: bool = True,
    name: str | None = None,
    pvout: str | Path | None = None,
) -> None:
    """Run one plugin class as a soft IOC, blocking until SIGINT or SIGTERM (iocmng's
    ``run_ioc``, same arguments and PV names). Call it from the main thread: EPICS's
    dispatcher runs there. Raises ``RunFailed`` (with the exit code) when the plugin cannot
    start or its worker ends with an error, where iocmng would raise the plugin's exception."""
    try:
        code = run_plugin_class(plugin_class, config=config, parameters=parameters, prefix=prefix, pva=pva,
                                name=name, pvout=pvout)
    except RunError as exc:
        raise RunFailed(str(exc), exc.code) from exc
    if code != WorkerExit.OK:
        from iochost.contract.exits import describe_exit

        raise RunFailed(f"{plugin_class.__qualname__}: {describe_exit(code)}", code)
