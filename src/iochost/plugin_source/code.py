"""Stages 2-3 together: from a plugin directory to its plugin class, reading code only.

The daemon runs this inside the throw-away probe process (``worker.probe``), never in
its own: parsing a hostile file can cost gigabytes (a 12 MB file of ``x=1`` lines takes
7 GB of AST), and the probe is memory-limited and killed at its deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from iochost.kinds import Kind
from iochost.plugin_source.classes import class_files, discover
from iochost.plugin_source.files import python_files
from iochost.plugin_source.syntax import parse_files
from iochost.report import Stage, ValidationIssue
from iochost.untrusted import MAX_SOURCE_FILES


@dataclass
class CodeFindings:
    """The plugin class (when discovery found one), its kind (as read from the code, or,
    from the probe, as the real class has it), and every issue."""

    kind: Kind | None = None
    class_name: str | None = None
    module_file: str | None = None
    issues: list[ValidationIssue] = field(default_factory=list)
    class_files: list[str] = field(default_factory=list)  # when no plugin class: files that define classes


def read_code(plugin_dir: Path, class_name: str | None) -> CodeFindings:
    """The plugin class found by syntax + discovery, or the issues of the first failing stage."""
    files = python_files(plugin_dir, limit=MAX_SOURCE_FILES + 1)
    if len(files) > MAX_SOURCE_FILES:
        too_many = f"more than {MAX_SOURCE_FILES} Python files in the plugin directory (limit of files per plugin)"
        return CodeFindings(issues=[ValidationIssue(stage=Stage.SYNTAX, message=too_many)])
    trees, issues = parse_files(plugin_dir, files)
    if issues:
        return CodeFindings(issues=issues)
    found, issues = discover(trees, class_name)
    if found is None:
        return CodeFindings(issues=issues, class_files=class_files(trees))
    return CodeFindings(kind=found.kind, class_name=found.class_name, module_file=found.module_file)
