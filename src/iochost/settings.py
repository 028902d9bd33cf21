"""Daemon settings: one model, filled from flags and IOCHOST_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

from iochost.spec.names import DEFAULT_PREFIX


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/iochost`` (``~/.local/share/iochost``): survives reboots, per user."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "iochost"


class Settings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    prefix: str = DEFAULT_PREFIX
    data_dir: Path = Field(default_factory=default_data_dir)
    log_level: str = "info"
    log_format: str = Field(default="text", pattern="^(text|json)$")
    examples: Path | None = Field(default=None, description="add every plugin directory under this one at start")

    grace_period: float = Field(default=10.0, gt=0, description="SIGTERM -> SIGKILL delay")
    start_timeout: float = Field(default=60.0, gt=0, description="worker spawn -> READY limit")
    import_timeout: float = Field(default=30.0, gt=0)
    heartbeat_interval: float = Field(default=1.0, gt=0)
    heartbeat_timeout: float = Field(default=15.0, gt=0, description="silence -> worker presumed hung")
    backoff_initial: float = Field(default=1.0, gt=0)
    backoff_max: float = Field(default=60.0, gt=0)
    backoff_reset: float = Field(default=60.0, gt=0, description="uptime after which backoff restarts at initial")
    cancel_grace: float = Field(default=5.0, gt=0, description="cancel -> worker restart if the job ignores it")
    runs_kept: int = Field(default=100, ge=50)
    git_timeout: float = Field(default=120.0, gt=0)
    max_checkout_bytes: int = Field(default=200 * 1024**2, gt=0)

    @property
    def plugins_dir(self) -> Path:
        return self.data_dir / "plugins"

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "registry.json"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"
