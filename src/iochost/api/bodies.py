"""Bodies and responses that exist only at the HTTP edge; the plugin and run records
themselves are ``iochost.supervisor.public``, shared with the supervisor. A request body
becomes the supervisor's own domain request here (``PluginRequest.to_add``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SecretStr, model_validator

from iochost.config.bounds import GracePeriod
from iochost.config.pvnames import PLUGIN_NAME_PATTERN
from iochost.errors import ErrorCode
from iochost.kinds import Kind
from iochost.store import PluginSource
from iochost.store.entries import COMMIT_PATTERN, ORDER_LIMIT
from iochost.store.policy import check_one_source
from iochost.supervisor.adding import AddRequest, UpgradeChange
from iochost.supervisor.public import PluginRecord, RunRecord
from iochost.supervisor.states import State


class ErrorBody(BaseModel):
    """Every non-2xx response. ``errors`` lists validation problems when there are several."""

    ok: bool = Field(default=False, description="always false: iocmng scripts test `ok` on every answer")
    code: ErrorCode
    message: str
    errors: list[dict[str, Any]] | None = None
    validation: dict[str, Any] | None = Field(default=None, description="an add or restart that failed "
                                              "validation: iocmng's report shape (ok, class_name, "
                                              "plugin_type, errors as text)")


class PluginRequest(BaseModel):
    """Body of ``POST /api/v1/plugins`` (and of the iocmng ``/tasks`` and ``/jobs`` aliases)."""

    model_config = {"extra": "forbid"}

    name: str = Field(pattern=PLUGIN_NAME_PATTERN, description="plugin name; PVs are PREFIX:NAME_UPPER:PV")
    git_url: str | None = Field(default=None, max_length=2048, description="any URL git clones")
    local_path: str | None = Field(default=None, max_length=4096, description="a directory on the daemon's host")
    branch: str | None = Field(default=None, max_length=255, description="branch or tag")
    commit: str | None = Field(default=None, pattern=COMMIT_PATTERN, description="pin a commit SHA")
    path: str | None = Field(default=None, max_length=1024, description="plugin sub-directory in the repository")
    class_name: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
    parameters: dict[str, Any] = Field(default_factory=dict, description="override config.yaml parameters")
    pat: SecretStr | None = Field(default=None, max_length=1024, description="token for a private repository")
    auto_start: bool = True
    auto_start_on_boot: bool | None = Field(
        default=None, description="iocmng: false keeps the plugin registered but stopped after a daemon restart; "
                                  "true or omitted: it comes back as it was (plugins file entries always do)")
    autostart_order: int | None = Field(default=None, ge=-ORDER_LIMIT, le=ORDER_LIMIT,
                                        description="iocmng: at daemon start, lower orders start first (each "
                                                    "order once the lower ones settled), then unordered ones; "
                                                    "name breaks ties")
    grace_period: GracePeriod | None = Field(default=None, description="stop grace period override")

    @model_validator(mode="after")
    def _one_source(self) -> "PluginRequest":
        check_one_source(self.git_url, self.local_path)  # its InvalidSource is a ValueError
        return self

    def to_add(self, kind: Kind | None = None) -> AddRequest:
        """The supervisor's request; ``kind``: what the iocmng ``/tasks`` or ``/jobs`` path requires."""
        return AddRequest(
            name=self.name,
            source=PluginSource(git_url=self.git_url, local_path=self.local_path, branch=self.branch,
                                commit=self.commit, path=self.path),
            class_name=self.class_name, parameters=self.parameters,
            pat=self.pat.get_secret_value() if self.pat else None, auto_start=self.auto_start,
            auto_start_on_boot=self.auto_start_on_boot, autostart_order=self.autostart_order,
            grace_period=self.grace_period, kind=kind,
        )


class UpgradeRequest(BaseModel):
    """Body of ``POST /api/v1/plugins/{name}/upgrade``: same repository and path, a new pin."""

    model_config = {"extra": "forbid"}

    branch: str | None = Field(default=None, max_length=255, description="follow this branch's tip (or tag)")
    commit: str | None = Field(default=None, pattern=COMMIT_PATTERN, description="pin this commit SHA")
    parameters: dict[str, Any] | None = Field(default=None, description="replace the parameter overrides; "
                                              "omitted: kept")
    pat: SecretStr | None = Field(default=None, max_length=1024, description="token for a private repository")

    def to_change(self) -> UpgradeChange:
        return UpgradeChange(branch=self.branch, commit=self.commit, parameters=self.parameters,
                             pat=self.pat.get_secret_value() if self.pat else None)


class RunRequest(BaseModel):
    """Body of ``POST /jobs/{name}/run``; optional, as iocmng clients send none."""

    model_config = {"extra": "forbid"}

    parameters: dict[str, Any] = Field(default_factory=dict, description="override parameters for this run")


class RunAccepted(BaseModel):
    run_id: str
    state: str


class Deleted(BaseModel):
    name: str
    deleted: bool = True
    ok: bool = Field(default=True, description="iocmng's field: the plugin is gone")
    message: str = Field(default="", description="iocmng's field: what was done, in words")

    @classmethod
    def of(cls, name: str) -> "Deleted":
        return cls(name=name, message=f"plugin {name!r} removed")


def validation_report(kind: Kind | None, class_name: str | None, errors: list[str],
                      warnings: list[str] | None = None) -> dict[str, Any]:
    """iocmng's validation report (``ok``, ``class_name``, ``plugin_type``, ``errors`` as
    text), made from what iochost's validation found: scripts print or test its fields.
    iochost adds ``warnings``: what iocmng would have ignored silently."""
    return {"ok": not errors, "class_name": class_name or None, "plugin_type": kind, "errors": errors,
            "warnings": warnings or []}


class PluginOutcome(PluginRecord):
    """The record, with iocmng's ``ok``, ``message`` and ``validation`` beside it: the answer
    of the adds, the restart and iocmng's routes that change a plugin."""

    ok: bool = Field(default=True, description="iocmng's field: the request was carried out")
    message: str | None = Field(default="", description="iocmng's meaning here: what was done, in words (the "
                                "record's MESSAGE PV text is `pv_message`)")
    pv_message: str | None = Field(default=None, description="the record's `message`: the MESSAGE PV's text")
    validation: dict[str, Any] | None = Field(default=None, description="iocmng's validation report "
                                              "(ok, class_name, plugin_type, errors)")

    @classmethod
    def of(cls, record: PluginRecord, message: str) -> "PluginOutcome":
        fields = record.model_dump()
        return cls(**fields | {"message": message, "pv_message": fields["message"]}, ok=True,
                   validation=validation_report(record.kind, record.class_name, [],
                                                 [str(issue) for issue in record.warnings]))


class RunOutcome(RunRecord):
    """A finished run, with iocmng's ``ok`` (the job succeeded) beside the record."""

    ok: bool = Field(description="iocmng's field: the run finished and the job reported success")

    @classmethod
    def of(cls, run: RunRecord) -> "RunOutcome":
        return cls(**run.model_dump(), ok=run.state == "succeeded")


class StartupInfo(BaseModel):
    """``GET /tasks/{name}/startup`` (and ``/jobs/...``): iocmng's start-up metadata of a plugin."""

    name: str
    plugin_type: Kind
    auto_start: bool = Field(description="meant to run (iochost: its desired state)")
    auto_start_on_boot: bool = Field(description="started again when the daemon restarts")
    autostart_order: int | None = Field(default=None, description="order at daemon start; null: after the "
                                        "ordered ones")
    pv_prefix: str | None = None
    plugin_prefix: str | None = None
    mode: str | None = Field(default=None, description="a task's mode; null for a job")
    start_parameters: dict[str, Any] = Field(description="config.yaml's parameters with the overrides")
    arguments: dict[str, Any] = Field(default_factory=dict, description="the declared PVs (iocmng 2.7's name)")
    pv_definitions: dict[str, Any] = Field(default_factory=dict, description="the declared PVs")
    base_control_pvs: list[str] = Field(default_factory=list, description="the PVs every plugin of its kind has")
    additional_input_pvs: list[str] = Field(default_factory=list)
    additional_output_pvs: list[str] = Field(default_factory=list)
    built_pvs: list[str] = Field(default_factory=list, description="the PVs its IOC serves, without the prefix")
    state: State = Field(description="iochost: the plugin's state now")


class Devices(BaseModel):
    """``GET /devices``: the ophyd devices of the beamline file (``--beamline-config``)."""

    available: list[str] = Field(description="every device a plugin can get with get_device()")
    available_count: int
    created: list[str] = Field(description="devices the daemon itself holds: always none, as each plugin's "
                                           "worker creates the devices it asks for in its own process")
    created_count: int


class LogTail(BaseModel):
    name: str
    lines: list[str]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody}
    for status in sorted({code.http_status for code in ErrorCode})
}
