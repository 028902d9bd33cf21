"""``validate_plugin``: all stages in order, every independent problem reported at once.

A stage is skipped only when it needs what an earlier stage failed to produce: discovery
needs every file to parse, import needs the discovered class, inheritance needs the
import. Config and syntax are independent, and PV names need only the config (the
default-PV collision check also needs the kind).

The config is read here, with bounded parsing (``config.yaml_lines``), its called functions
left unchecked (the plugin may register them). Every stage that reads the plugin's code
(syntax, discovery, import, inheritance) runs in the probe subprocess, so a hostile file
costs the caller neither memory nor time, and so does what needs the imported plugin:
the functions check (a function its import does not register is a warning: initialize() may
register it, and the worker checks after it) and the records, built as the worker builds them. Only
``run_import=False`` (``iochost run``, about to import the plugin itself) parses here; its
worker checks the functions and builds the records right after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iochost.config import ConfigError, PluginConfig, load_config, plugin_mode
from iochost.config.limits import resolve_memory_limit
from iochost.config.pvnames import (
    DEFAULT_PREFIX,
    check_pv_names,
    default_pv_names,
    plugin_pv_prefix,
)
from iochost.launch.launcher import Launcher
from iochost.plugin_source.code import read_code
from iochost.report import PluginInfo, Severity, Stage, ValidationIssue, ValidationReport
from iochost.validate.import_check import RecordCheck, probe_plugin


def _config(plugin_dir: Path, parameters: dict[str, Any] | None) -> tuple[PluginConfig | None, list[ValidationIssue]]:
    try:
        config = load_config(plugin_dir)
        return (config.with_parameters(parameters) if parameters else config), []
    except ConfigError as exc:
        return None, exc.issues


def validate_plugin(
    plugin_dir: Path,
    *,
    name: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    class_name: str | None = None,
    parameters: dict[str, Any] | None = None,
    import_timeout: float = 30.0,
    run_import: bool = True,
    python: str | None = None,
    memory_limit_mb: int | None = None,
    launcher: Launcher | None = None,
) -> ValidationReport:
    """Check a plugin directory the way the worker will use it.

    ``parameters`` are overrides of config.yaml (they can change the task mode and so the
    default PVs). ``run_import=False`` skips the import subprocess, for callers that
    import the plugin themselves right after (``iochost run``). ``python`` is the
    interpreter of the import probe (a plugin's own environment; default: this one);
    ``memory_limit_mb`` the daemon's memory limit, the probe's when config.yaml sets none
    (``config.limits.resolve_memory_limit``, as for the worker);
    ``launcher`` the daemon's fork server, to fork the probe instead of spawning it.
    """
    root = Path(plugin_dir).resolve()
    name = name or root.name
    report = ValidationReport(plugin_dir=str(root), name=name)
    if not root.is_dir():
        report.issues.append(ValidationIssue(stage=Stage.CONFIG, message=f"plugin directory {root} does not exist"))
        return report

    config, issues = _config(root, parameters)
    if run_import:
        limit = resolve_memory_limit(config.parameters if config is not None else None, memory_limit_mb)
        records = RecordCheck(prefix, name, parameters or {}) if config is not None else None
        code = probe_plugin(root, class_name, import_timeout, python=python, memory_limit_mb=limit,
                            launcher=launcher, records=records)
    else:
        code = read_code(root, class_name)
    issues += [issue for issue in code.issues if issue.severity == Severity.ERROR]
    probed = [issue for issue in code.issues if issue.severity == Severity.WARNING]
    kind = code.kind

    mode = None
    if config is not None:
        mode = plugin_mode(kind, config.parameters)
        issues += check_pv_names(prefix, name, kind, mode, config.pvs,
                                 lines=config.key_lines, section=config.pv_section, segment=config.prefix)

    report.issues = issues
    report.warnings = (config.warnings if config is not None else []) + probed
    if not issues and code.class_name and code.module_file and kind is not None and config is not None:
        declared = [*config.pvs.inputs, *config.pvs.outputs]
        device = plugin_pv_prefix(prefix, name, config.prefix)
        report.plugin = PluginInfo(
            kind=kind, class_name=code.class_name, module_file=code.module_file, mode=mode, pv_prefix=device,
            pvs=[f"{device}:{pv}" for pv in default_pv_names(kind, mode, config.pvs) + declared],
        )
    return report
