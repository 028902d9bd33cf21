"""WorkerSpec: everything a worker process needs, passed as one JSON document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from iochost.config.pvnames import DEFAULT_PREFIX

WorkerLogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]  # iocmng-run's --log-level choices


class AccessSecurity(BaseModel):
    """EPICS access security for one worker: the ACF it loads before iocInit, and the access
    security group (ASG) of records that do not take the worker's defaults."""

    model_config = {"extra": "forbid"}

    file: str = Field(description="ACF path; a file asInit rejects is fatal to the worker")
    groups: dict[str, str] = Field(default_factory=dict, description="short PV name -> ASG")


class WorkerSpec(BaseModel):
    """How to run one plugin as one soft IOC.

    The supervisor writes this to a file and starts ``python -m iochost.worker FILE``;
    ``iochost run`` builds the same object from its command line.
    """

    model_config = {"extra": "forbid"}

    name: str
    plugin_dir: str
    module_file: str = Field(description="relative to plugin_dir")
    class_name: str
    prefix: str = DEFAULT_PREFIX
    pv_prefix: str | None = Field(default=None, description="the whole PV prefix of every record "
                                  "(iocmng-run's --prefix); None: prefix:SEGMENT (config.pvnames)")
    config_file: str | None = Field(default=None, description="the config.yaml to read (iocmng-run's "
                                    "--config); None: plugin_dir/config.yaml")
    parameters: dict[str, Any] = Field(default_factory=dict, description="overrides of config.yaml")
    version: str = "unversioned"
    grace_period: float = Field(gt=0, description="cleanup() time on stop, resolved by config.limits")
    heartbeat_interval: float = Field(default=1.0, gt=0)
    memory_limit_mb: int | None = Field(default=None, gt=0, description="RLIMIT_DATA; None: no limit")
    max_open_files: int | None = Field(default=None, gt=0, description="RLIMIT_NOFILE; None: inherited")
    log_level: WorkerLogLevel = Field(default="INFO", description="the "
                                                                  "worker's logging level (iocmng-run's --log-level)")
    realtime: bool = Field(default=False, description="keep real-time scheduling (and EPICS's mlockall)")
    cgroup: str | None = Field(default=None, description="cgroup v2 directory the worker joins first thing")
    forward_log_rate: tuple[int, float] | None = Field(
        default=None, description="log records forwarded to the supervisor: at most (COUNT, per SECONDS); None: all")
    autosave_file: str | None = Field(default=None, description="JSON file the autosaved inputs and the "
                                      "plugin's snapshot() are kept in and restored from; None: nothing kept")
    access_security: AccessSecurity | None = Field(default=None, description="EPICS access security; None: "
                                                   "every client may write")
    beamline_config: dict[str, Any] = Field(default_factory=dict, description="the parsed beamline "
                                            "values.yaml: the plugin's beamline_config and its devices")
    event_fd: int | None = None
    command_fd: int | None = None
