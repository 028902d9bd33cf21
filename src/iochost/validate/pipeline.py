"""``validate_plugin``: all stages in order, every independent problem reported at once.

A stage is skipped only when it needs what an earlier stage failed to produce: discovery
needs every file to parse, import needs the discovered class, inheritance needs the
import. Config and syntax are independent, and PV names need only the config (the
default-PV collision check also needs the kind).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iochost.spec import ConfigError, PluginConfig, load_config
from iochost.spec.names import (
    DEFAULT_PREFIX,
    check_pv_names,
    default_pv_names,
    full_pv_name,
)
from iochost.validate.discovery import discover
from iochost.validate.files import python_files
from iochost.validate.import_check import probe_plugin
from iochost.validate.report import PluginInfo, Stage, ValidationIssue, ValidationReport
from iochost.validate.syntax import parse_files


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
) -> ValidationReport:
    """Check a plugin directory the way the worker will use it.

    ``parameters`` are overrides of config.yaml (they can change the task mode and so the
    default PVs). ``run_import=False`` skips the import subprocess, for callers that
    import the plugin themselves right after (``iochost run``). ``python`` is the
    interpreter of the import probe (a plugin's own environment; default: this one).
    """
    root = Path(plugin_dir).resolve()
    name = name or root.name
    report = ValidationReport(plugin_dir=str(root), name=name)
    if not root.is_dir():
        report.issues.append(ValidationIssue(stage=Stage.CONFIG, message=f"plugin directory {root} does not exist"))
        return report

    config, issues = _config(root, parameters)
    trees, syntax_issues = parse_files(root, python_files(root))
    issues += syntax_issues

    found = None
    if not syntax_issues:
        found, discovery_issues = discover(trees, class_name)
        issues += discovery_issues
    kind = found.kind if found else None
    if found is not None and run_import:
        kind, probe_issues = probe_plugin(root, found.module_file, found.class_name, import_timeout,
                                            python=python)
        issues += probe_issues

    mode = None
    if config is not None:
        mode = config.parameters.mode if kind == "task" else None
        issues += check_pv_names(prefix, name, kind, mode, config.pvs,
                                 lines=config.key_lines, section=config.pv_section)

    report.issues = issues
    if not issues and found is not None and kind is not None and config is not None:
        declared = [*config.pvs.inputs, *config.pvs.outputs]
        report.plugin = PluginInfo(
            kind=kind, class_name=found.class_name, module_file=found.module_file, mode=mode,
            pvs=[full_pv_name(prefix, name, pv) for pv in default_pv_names(kind, mode) + declared],
        )
    return report
