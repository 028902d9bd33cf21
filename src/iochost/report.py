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


class Severity(str, Enum):
    """An error refuses the plugin; a warning (something iocmng would silently ignore) is
    reported and the plugin runs."""

    ERROR = "error"
    WARNING = "warning"


class ValidationIssue(BaseModel):
    """One problem. `file` is relative to the plugin directory; `line` is 1-based."""

    stage: Stage
    file: str | None = None
    line: int | None = None
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = self.file or "<plugin>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        label = "warning: " if self.severity == Severity.WARNING else ""
        return f"[{self.stage.value}] {where}: {label}{self.message}"


class PluginInfo(BaseModel):
    """What validation learned about a valid plugin; the worker spec is built from it."""

    kind: Kind
    class_name: str
    module_file: str = Field(description="Python file defining the class, relative to the plugin dir")
    mode: Mode | None = Field(
        default=None, description="Task mode; None for jobs"
    )
    pvs: list[str] = Field(default_factory=list, description="Full PV names, defaults included")
    pv_prefix: str = Field(default="", description="what every PV name starts with: PREFIX:SEGMENT, the segment "
                           "being config.yaml's prefix: or the plugin name upper-cased")


class ValidationReport(BaseModel):
    """All issues of one validation run; `plugin` is set when there are none."""

    plugin_dir: str
    name: str | None = Field(default=None, description="plugin name the PV names were checked with")
    issues: list[ValidationIssue] = Field(default_factory=list, description="errors: any refuses the plugin")
    warnings: list[ValidationIssue] = Field(default_factory=list, description="accepted, but worth a look")
    plugin: PluginInfo | None = None

    @property
    def ok(self) -> bool:
        return not self.issues and self.plugin is not None


def render_text(report: ValidationReport) -> str:
    """Every warning, then one OK line for a valid plugin; otherwise every issue and a summary line."""
    name = report.name or report.plugin_dir
    warned = [str(issue) for issue in report.warnings]
    if report.ok:
        info = report.plugin
        assert info is not None
        mode = f" {info.mode}" if info.mode else ""
        count = len(report.warnings)
        noted = f", {count} warning{'s' if count != 1 else ''}" if count else ""
        return "\n".join(warned + [f"OK: {name} is a{mode} {info.kind} ({info.class_name} in {info.module_file}), "
                                   f"{len(info.pvs)} PVs{noted}"])
    stages = ", ".join(dict.fromkeys(issue.stage.value for issue in report.issues))
    count = len(report.issues)
    lines = [str(issue) for issue in report.issues] + warned
    lines.append(f"FAILED: {name}: {count} error{'s' if count != 1 else ''} ({stages})")
    return "\n".join(lines)
