"""The daemon's public data shapes: plugin and run records, health, events.

The REST API uses these models as its bodies and responses, so what the supervisor knows
and what clients see cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from iochost.durable import StorageProblem
from iochost.kinds import Kind
from iochost.report import ValidationIssue
from iochost.store.entries import DesiredState
from iochost.supervisor.states import State


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
    timestamp: str | None = Field(default=None, description="iocmng's field: when the result was made, ISO 8601 "
                                  "as the job's JobResult wrote it; for a result the daemon made (the worker "
                                  "went away, a result not kept) when the run ended")


# A job run's state: "running", then one final outcome (``runs.RUN_OUTCOMES``).
RunState = Literal["running", "succeeded", "failed", "cancelled"]


class RunRecord(BaseModel):
    run_id: str
    job: str
    state: RunState
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
    previous_commit: str | None = Field(default=None, description="the commit the last upgrade replaced")
    state: State
    desired_state: DesiredState
    status: str | None = Field(default=None, description="the STATUS PV: RUN, PAUSED, ERROR, IDLE, ...")
    message: str | None = Field(default=None, description="the whole text written to the MESSAGE PV, up to 4000 "
                                                        "characters (the PV keeps the first 39)")
    pid: int | None = None
    restarts: int = 0
    pv_prefix: str
    pvs: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    last_error: str | None = Field(default=None, description="why it last failed, crashed or showed STATUS "
                                                           "ERROR/FAILED: the whole text")
    transitions: list[Transition] = Field(default_factory=list)
    warnings: list[ValidationIssue] = Field(default_factory=list, description="validation warnings of the "
                                            "revision it runs: accepted config.yaml keys iocmng would ignore")
    running: bool | None = Field(default=None, description="iocmng's field: a task's loop runs (state running "
                                 "or paused: ENABLE=0 pauses the loop, it does not end it); null for a job")
    cycle_count: int | None = Field(default=None, description="iocmng's field: a task's cycles (its CYCLE_COUNT PV), "
                                    "as its worker's last heartbeat reported it (every --heartbeat-interval); "
                                    "kept once the worker ends, 0 again when a new one starts; null for a job")

    @computed_field(description="iocmng's name of `kind`")  # type: ignore[prop-decorator]
    @property
    def plugin_type(self) -> Kind:
        return self.kind

    @computed_field(description="iocmng's field: `source.git_url`")  # type: ignore[prop-decorator]
    @property
    def git_url(self) -> str | None:
        return self.source.git_url

    @computed_field(  # type: ignore[prop-decorator]
        description="iocmng's field: `source.path`, the plugin's folder in its repository; \"\" for the top")
    @property
    def path(self) -> str:
        return self.source.path or ""


class PluginList(BaseModel):
    plugins: list[PluginRecord]
    count: int


class RunList(BaseModel):
    runs: list[RunRecord]
    count: int


# Why /health names a plugin (``PluginLifecycle.trouble`` decides; /metrics counts each).
Trouble = Literal["failed", "crashed", "crash_looping", "status_error", "not_running"]


class PluginProblem(BaseModel):
    """One plugin that makes ``/health`` degraded, and why."""

    name: str
    kind: Kind
    reason: Trouble = Field(
        description="failed (not restarted); crashed (restarted with backoff), crash_looping from the "
                    "second crash in a row; status_error: STATUS is ERROR (task) or FAILED (job); "
                    "not_running: meant to run, starting or stopping")
    state: State
    status: str | None = Field(default=None, description="the STATUS PV")
    restarts: int = 0
    last_error: str | None = Field(default=None, description="the whole text (the MESSAGE PV keeps 39 characters)")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    uptime: float
    ready: bool = Field(description="the registry's plugins are restored (each running or settled); "
                                    "the API answers from the start, while they are brought back")
    plugins: dict[str, int] = Field(description="total and a count per state")
    tasks_count: int = Field(description="iocmng's field: the tasks there are, in any state")
    jobs_count: int = Field(description="iocmng's field: the jobs there are, in any state")
    problems: list[PluginProblem] | None = Field(
        default=None, description="every plugin that makes the status degraded, with its last error; "
                                  "null for a caller without a valid token when tokens are configured")
    storage: StorageProblem | None = Field(
        default=None, description="while the data directory refuses writes (full disk, inodes, quota): the "
                                  "write that failed; changes answer 507 STORAGE_FULL until space is freed")
    launcher: str | None = Field(
        default=None, description="while the fork server fails to provide processes: why (it is restarted, "
                                  "and workers and probes are spawned meanwhile); null when it works or is off")


class Readiness(BaseModel):
    """What a Kubernetes probe reads: ``/health/live`` and ``/health/ready``."""

    live: bool = True
    ready: bool
    restoring: int = Field(description="plugins still being brought back (pending or starting)")


class StreamEvent(BaseModel):
    """One event of the event stream, pushed to ``GET /api/v1/events`` subscribers (not a
    lifecycle event: those are ``lifecycle_types.Event``)."""

    type: Literal["transition", "status", "run", "upgrade", "control"]
    plugin: str
    at: datetime
    data: dict[str, Any] = Field(default_factory=dict)
