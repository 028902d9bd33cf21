"""What the store persists and returns: a plugin's source, its registry entry, a fetch result.

`PluginSource` deliberately has no credential field and forbids extra keys, so a PAT can
never be smuggled into the registry file through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from iochost.kinds import Kind
from iochost.report import ValidationIssue

SHA_PATTERN = r"^[0-9a-f]{40}$"
# A commit a client pins: a hex SHA or a prefix of one that git resolves. The API's
# PluginRequest.commit and the store's fetch check both use this.
MIN_COMMIT_DIGITS = 7  # git's own shortest abbreviation
COMMIT_PATTERN = rf"^[0-9a-fA-F]{{{MIN_COMMIT_DIGITS},40}}$"
ORDER_LIMIT = 2**31 - 1  # bound of autostart_order (iocmng: any int); keeps it a plain 32-bit number


class PluginSource(BaseModel):
    """Where a plugin comes from: exactly one of `git_url` / `local_path` (checked on fetch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    git_url: str | None = None
    local_path: str | None = None
    branch: str | None = None
    commit: str | None = None
    path: str | None = None


# What the operator wants of a plugin (its ``state`` is what it is): a worker running, or
# none. The one list of these values: the registry, the API's records and every request.
DesiredState = Literal["running", "stopped"]
DESIRED_RUNNING: Final = "running"
DESIRED_STOPPED: Final = "stopped"


class RegistryEntry(BaseModel):
    """The desired state of one plugin, as persisted in the registry file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Kind
    class_name: str
    source: PluginSource
    commit: str | None = Field(default=None, pattern=SHA_PATTERN,
                               description="resolved 40-hex SHA; None for a non-git local_path")
    previous_commit: str | None = Field(default=None, pattern=SHA_PATTERN,
                                        description="the commit the last upgrade replaced")
    module_file: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    desired_state: DesiredState = DESIRED_RUNNING
    auto_start_on_boot: bool | None = Field(default=None, description="false: a daemon restart leaves it "
                                            "stopped (unless the plugins file declares it); None/true: as it was")
    autostart_order: int | None = Field(default=None, ge=-ORDER_LIMIT, le=ORDER_LIMIT,
                                        description="start-up order at daemon start; None: after the ordered ones")
    created_at: datetime
    updated_at: datetime
    options: dict[str, Any] = Field(default_factory=dict)
    warnings: list[ValidationIssue] = Field(default_factory=list, description="what validating this revision "
                                            "warned of (config.yaml keys iocmng would ignore)")


@dataclass(frozen=True)
class FetchResult:
    """A checkout in place: its root, the plugin directory inside it, the commit it is at."""

    checkout_dir: Path
    plugin_dir: Path
    commit: str | None
