"""The structured result of validating a plugin: every problem with stage, file and line."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, Field

from iochost.kinds import Kind, Mode


class Stage(str, Enum):
    """Validation stages, in the order they run."""

    CONFIG = "config"
    SYNTAX = "syntax"
    DISCOVERY = "discovery"
    IMPORT = "import"
    INHERITANCE = "inheritance"
    PVS = "pvs"
    REQUIREMENTS = "requirements"  # the daemon installing requirements.txt (iochost.store.envs)


class ValidationIssue(BaseModel):
    """One problem. `file` is relative to the plugin directory; `line` is 1-based."""

    stage: Stage
    file: str | None = None
    line: int | None = None
    message: str

    def __str__(self) -> str:
        where = self.file or "<plugin>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"[{self.stage.value}] {where}: {self.message}"


class PluginInfo(BaseModel):
    """What validation learned about a valid plugin; the worker spec is built from it."""

    kind: Kind
    class_name: str
    module_file: str = Field(description="Python file defining the class, relative to the plugin dir")
    mode: Mode | None = Field(
        default=None, description="Task mode; None for jobs"
    )
    pvs: list[str] = Field(default_factory=list, description="Full PV names, defaults included")


class ValidationReport(BaseModel):
    """All issues of one validation run; `plugin` is set when there are none."""

    plugin_dir: str
    name: str | None = Field(default=None, description="plugin name the PV names were checked with")
    issues: list[ValidationIssue] = Field(default_factory=list)
    plugin: PluginInfo | None = None

    @property
    def ok(self) -> bool:
        return not self.issues and self.plugin is not None


def render_text(report: ValidationReport) -> str:
    """One OK line for a valid plugin; otherwise every issue and a summary line."""
    name = report.name or report.plugin_dir
    if report.ok:
        info = report.plugin
        assert info is not None
        mode = f" {info.mode}" if info.mode else ""
        return (f"OK: {name} is a{mode} {info.kind} ({info.class_name} in {info.module_file}), "
                f"{len(info.pvs)} PVs")
    stages = ", ".join(dict.fromkeys(issue.stage.value for issue in report.issues))
    count = len(report.issues)
    lines = [str(issue) for issue in report.issues]
    lines.append(f"FAILED: {name}: {count} error{'s' if count != 1 else ''} ({stages})")
    return "\n".join(lines)
