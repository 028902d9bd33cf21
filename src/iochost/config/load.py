"""``load_config``: config.yaml -> PluginConfig, or ConfigError listing every problem."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from iochost.config.issues import (
    CONFIG_FILE,
    ConfigError,
    config_issue,
    issues_from_pydantic,
)
from iochost.config.schema import PluginConfig
from iochost.config.yaml_lines import KeyPath, YamlSyntaxError, parse_yaml
from iochost.report import Stage, ValidationIssue
from iochost.untrusted import MAX_CONFIG_BYTES, UntrustedFileError, read_text_bounded


def _issue(message: str, line: int | None = None) -> ValidationIssue:
    return ValidationIssue(stage=Stage.CONFIG, file=CONFIG_FILE, line=line, message=message)


def _canonical(lines: dict[KeyPath, int], section: str) -> dict[KeyPath, int]:
    """Key lines with ``arguments`` spelt ``pvs``, the name the schema uses."""
    if section == "pvs":
        return lines
    return {(("pvs",) + path[1:] if path[:1] == (section,) else path): line for path, line in lines.items()}


def _listed_lines(lines: dict[KeyPath, int], pvs: Any) -> dict[KeyPath, int]:
    """Key lines of PVs given as a list of named mappings (iocmng MANUAL section 11) under
    the PV's name too, the path the schema reports them at."""
    named: dict[KeyPath, int] = {}
    for group, listed in (pvs.items() if isinstance(pvs, dict) else ()):
        for index, item in enumerate(listed if isinstance(listed, list) else ()):
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                at = ("pvs", str(group), str(index))
                named.update({("pvs", str(group), item["name"]) + path[3:]: line
                              for path, line in lines.items() if path[:3] == at})
    return named


def load_config(plugin_dir: Path, *, check_functions: bool = False, file: Path | None = None) -> PluginConfig:
    """Read and validate ``plugin_dir/config.yaml``; an empty file declares no PVs.

    ``check_functions``: check the functions expressions call against the library as this
    process has it. Only where the plugin's module has been imported (the validation probe,
    the worker) does the library hold the functions the plugin registers; the daemon, which
    never imports plugin code, leaves that check to the probe. ``file``: read this file
    instead (``iochost run --config``, as iocmng-run's config need not sit beside the code)."""
    if file is not None:
        plugin_dir = Path(os.path.abspath(file)).parent
        name = Path(file).name
        if not os.path.lexists(file):
            raise ConfigError([_issue(f"config file {file} not found")])
    else:
        name = CONFIG_FILE
    path = Path(plugin_dir) / name
    if not os.path.lexists(path):
        other = [p.name for p in (path.with_suffix(".yml"),) if p.is_file()]
        hint = f"; found {other[0]}, rename it to {CONFIG_FILE}" if other else ""
        raise ConfigError([_issue(f"{CONFIG_FILE} not found in the plugin directory{hint}")])
    try:
        text = read_text_bounded(plugin_dir, name, MAX_CONFIG_BYTES)
    except UntrustedFileError as exc:
        raise ConfigError([_issue(str(exc))]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([_issue(f"cannot read {path if file is not None else CONFIG_FILE}: {exc}")]) from None
    try:
        doc = parse_yaml(text)
    except YamlSyntaxError as exc:
        raise ConfigError([_issue(str(exc), exc.line)]) from None

    issues: list[ValidationIssue] = [
        config_issue(key, f"duplicate key (first at line {first}); YAML would silently keep this one",
                     {key: line})
        for key, line, first in doc.duplicates
    ]
    data = doc.data
    if data is not None and not isinstance(data, dict):
        issues.append(_issue(f"the file must be a mapping (parameters:, pvs:), not a {type(data).__name__}", 1))
        raise ConfigError(issues)
    data = dict(data or {})
    section = "arguments" if "arguments" in data and "pvs" not in data else "pvs"
    if "arguments" in data and "pvs" in data:
        issues.append(config_issue(("arguments",), "give PVs under pvs: (iocmng 2.0) or arguments: "
                                   "(iocmng 2.7), not both", doc.lines))
        del data["arguments"]  # still validate pvs: so its own problems are reported too
    lines = {**_canonical(doc.lines, section)}
    lines.update(_listed_lines(lines, data.get(section)))
    try:
        config = PluginConfig.model_validate(data, context={"check_functions": check_functions})
    except ValidationError as exc:
        issues += issues_from_pydantic(exc, PluginConfig, lines=lines, rename={"pvs": section})
        config = None
    if issues:
        issues.sort(key=lambda issue: (issue.line is None, issue.line or 0))
        raise ConfigError(issues)
    assert config is not None
    config._pv_section = section
    config._key_lines = lines
    return config

