"""config.yaml's ``parameters:``: the well-known keys typed, any other kept for the plugin."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from iochost.config.bounds import GracePeriod, MemoryLimitMB, OpenFilesLimit, Watchdog
from iochost.config.issues import SchemaProblems
from iochost.kinds import Kind, Mode
from iochost.sdk.pv_client import DEFAULT_PVA


class Parameters(BaseModel):
    """Well-known parameters typed; any other key is kept for the plugin's ``self.parameters``."""

    model_config = ConfigDict(extra="allow", strict=True)

    mode: Mode = "continuous"
    interval: float = Field(default=1.0, gt=0, description="seconds between execute() calls")
    retry_on_error: bool = Field(default=False, description="a continuous task whose execute() raised "
                                 "keeps running it (status ERROR until it succeeds); false: it halts")
    watchdog: Watchdog | None = Field(default=None, description="longest a plugin call may take")
    grace_period: GracePeriod | None = Field(default=None,
                                             description="time cleanup() gets on stop; default: the daemon's")
    memory_limit_mb: MemoryLimitMB | None = Field(default=None,
                                                  description="the worker's memory limit; default: the daemon's")
    max_open_files: OpenFilesLimit | None = Field(default=None,
                                                  description="the worker's open-file limit; default: the daemon's")
    pva: bool = Field(default=DEFAULT_PVA,
                      description="links and pv_client use PV Access (p4p); false: Channel Access")
    timeout: float = Field(default=5.0, gt=0, description="seconds a link read or write may take")

    @model_validator(mode="before")
    @classmethod
    def _mode(cls, data: Any) -> Any:
        """``mode`` is case-insensitive; iocmng's ``triggered: true`` means triggered mode."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("mode"), str):
            data["mode"] = data["mode"].strip().lower()
        triggered = data.get("triggered")
        if "triggered" in data and not isinstance(triggered, bool):
            raise SchemaProblems([(("triggered",), f"should be true or false, got {triggered!r}")])
        if triggered is not None and "mode" not in data:
            data["mode"] = "triggered" if triggered else "continuous"
        elif triggered is not None and (data["mode"] == "triggered") != triggered:
            raise SchemaProblems([(("triggered",), f"contradicts mode: {data['mode']}")])
        return data


def plugin_mode(kind: Kind | None, parameters: Parameters) -> Mode | None:
    """The mode a plugin of ``kind`` runs in: a task's configured mode; None for a job (or
    a kind not known yet). The validator and the worker both derive it here."""
    return parameters.mode if kind == "task" else None
