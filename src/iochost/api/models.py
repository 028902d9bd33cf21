"""Bodies and responses that exist only at the HTTP edge; the plugin and run records
themselves are ``iochost.supervisor.models``, shared with the supervisor. A request body
becomes the supervisor's own domain request here (``PluginRequest.to_add``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SecretStr, model_validator

from iochost.config.pvnames import PLUGIN_NAME_PATTERN
from iochost.errors import ErrorCode
from iochost.kinds import Kind
from iochost.store import PluginSource
from iochost.store.models import COMMIT_PATTERN
from iochost.store.policy import check_one_source
from iochost.supervisor.adding import AddRequest, UpgradeChange


class ErrorBody(BaseModel):
    """Every non-2xx response. ``errors`` lists validation problems when there are several."""

    code: ErrorCode
    message: str
    errors: list[dict[str, Any]] | None = None


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
    grace_period: float | None = Field(default=None, gt=0, le=600, description="stop grace period override")

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


class LogTail(BaseModel):
    name: str
    lines: list[str]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody}
    for status in sorted({code.http_status for code in ErrorCode})
}
