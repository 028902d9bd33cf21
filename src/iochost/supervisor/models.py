"""The daemon's public data shapes: the add request, plugin and run records, health, events.

The REST API uses these models as its bodies and responses, so what the supervisor knows
and what clients see cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

from iochost.config.pvnames import PLUGIN_NAME_PATTERN
from iochost.store.policy import has_credentials
from iochost.supervisor.states import State

Kind = Literal["task", "job"]


class PluginRequest(BaseModel):
    """Body of ``POST /api/v1/plugins`` (and of the iocmng ``/tasks`` and ``/jobs`` aliases)."""

    model_config = {"extra": "forbid"}

    name: str = Field(pattern=PLUGIN_NAME_PATTERN, description="plugin name; PVs are PREFIX:NAME_UPPER:PV")
    git_url: str | None = Field(default=None, max_length=2048, description="any URL git clones")
    local_path: str | None = Field(default=None, max_length=4096, description="a directory on the daemon's host")
    branch: str | None = Field(default=None, max_length=255, description="branch or tag")
    commit: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{7,40}$", description="pin a commit SHA")
    path: str | None = Field(default=None, max_length=1024, description="plugin sub-directory in the repository")
    class_name: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
    parameters: dict[str, Any] = Field(default_factory=dict, description="override config.yaml parameters")
    pat: SecretStr | None = Field(default=None, max_length=1024, description="token for a private repository")
    auto_start: bool = True
    grace_period: float | None = Field(default=None, gt=0, le=600, description="stop grace period override")

    @model_validator(mode="after")
    def _one_source(self) -> "PluginRequest":
        if (self.git_url is None) == (self.local_path is None):
            raise ValueError("give exactly one of git_url or local_path")
        if self.git_url is not None and has_credentials(self.git_url):
            # A token inside the URL would reach the registry, events and logs; `pat` does not.
            raise ValueError("git_url must not carry credentials; pass the token as `pat`")
        return self


class SourceInfo(BaseModel):
    git_url: str | None = None
    local_path: str | None = None
    branch: str | None = None
    commit: str | None = Field(default=None, description="resolved 40-hex SHA")
    path: str | None = None


class Transition(BaseModel):
    at: datetime
    from_state: State | None
    to_state: State
    reason: str = ""


class RunResult(BaseModel):
    success: bool
    data: dict[str, Any] = Field(default_factory=dict)
    message: str = ""


class RunRecord(BaseModel):
    run_id: str
    job: str
    state: Literal["running", "succeeded", "failed", "cancelled"]
    origin: Literal["api", "epics"] = "api"
    parameters: dict[str, Any] = Field(default_factory=dict)
    started_at: datetime
    finished_at: datetime | None = None
    result: RunResult | None = None


class PluginRecord(BaseModel):
    name: str
    kind: Kind
    class_name: str
    source: SourceInfo
    state: State
    desired_state: Literal["running", "stopped"]
    status: str | None = Field(default=None, description="the STATUS PV: RUN, PAUSED, ERROR, IDLE, ...")
    message: str | None = Field(default=None, description="the MESSAGE PV")
    pid: int | None = None
    restarts: int = 0
    pv_prefix: str
    pvs: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    last_error: str | None = None
    transitions: list[Transition] = Field(default_factory=list)


class PluginList(BaseModel):
    plugins: list[PluginRecord]
    count: int


class RunList(BaseModel):
    runs: list[RunRecord]
    count: int


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    uptime: float
    plugins: dict[str, int] = Field(description="total and a count per state")


class Event(BaseModel):
    """Pushed to ``GET /api/v1/events`` subscribers."""

    type: Literal["transition", "status", "run"]
    plugin: str
    at: datetime
    data: dict[str, Any] = Field(default_factory=dict)
