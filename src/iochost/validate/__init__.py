"""Staged plugin validation -> ValidationReport; the daemon and ``iochost validate`` share it.

Exports load lazily: ``python -m iochost.validate.probe`` must start without pulling in the
schema and pipeline it does not need (and ``iochost.spec`` imports ``validate.report``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iochost.validate.report import (
    PluginInfo,
    Stage,
    ValidationIssue,
    ValidationReport,
    render_text,
)

if TYPE_CHECKING:
    from iochost.validate.pipeline import validate_plugin

__all__ = ["validate_plugin", "render_text", "ValidationReport", "ValidationIssue", "PluginInfo", "Stage"]


def __getattr__(name: str) -> Any:
    if name == "validate_plugin":
        from iochost.validate.pipeline import validate_plugin

        return validate_plugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
