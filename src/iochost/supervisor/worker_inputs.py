"""What a worker is started with: its spec (under the limits its lifecycle resolved), its
environment and its log file.

Blocking (it probes a port, opens the log): the shell calls ``start_inputs`` in a thread,
once per spawn.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from iochost import autosave_files
from iochost.config.limits import WorkerLimits
from iochost.contract.worker_spec import WorkerSpec
from iochost.environ import python_child_environ
from iochost.settings import Settings
from iochost.supervisor import logfiles
from iochost.supervisor.daemon_ioc import worker_access_security
from iochost.supervisor.lifecycle import PluginLifecycle
from iochost.supervisor.slots import Services


@dataclass(frozen=True)
class StartInputs:
    spec: WorkerSpec
    python: str | None  # the plugin's own environment's interpreter; None: the daemon's
    env: dict[str, str]
    logfile: logfiles.RotatingFile


def log_path(settings: Settings, name: str) -> Path:
    return settings.logs_dir / f"{name}.log"


def start_inputs(settings: Settings, services: Services, lc: PluginLifecycle, limits: WorkerLimits) -> StartInputs:
    """Blocking, in one thread hop: the spec, the environment (probes a port), the log file."""
    spec, python = worker_spec(settings, services, lc, limits)
    env = worker_env(services, lc.name, python)
    logfile = logfiles.RotatingFile(log_path(settings, lc.name), settings.log_rotate_bytes, settings.log_rotate_files)
    return StartInputs(spec, python, env, logfile)


def worker_spec(settings: Settings, services: Services, lc: PluginLifecycle,
                limits: WorkerLimits) -> tuple[WorkerSpec, str | None]:
    """The spec of the lifecycle's next worker, under the ``limits`` the lifecycle resolved
    (they time its stop too)."""
    entry = lc.entry
    assert lc.plugin_dir is not None and entry.module_file is not None
    env_python = services.envs.python(entry.name)
    spec = WorkerSpec(
        name=entry.name, plugin_dir=str(lc.plugin_dir), module_file=entry.module_file,
        class_name=entry.class_name, prefix=settings.prefix, parameters=entry.parameters,
        version=entry.options.get("version") or (entry.commit or "local")[:12],
        grace_period=limits.grace_period, heartbeat_interval=settings.heartbeat_interval,
        memory_limit_mb=limits.memory_limit_mb, max_open_files=limits.max_open_files,
        forward_log_rate=settings.plugin_log_limit, realtime=settings.worker_realtime,
        autosave_file=str(autosave_files.path_for(settings.autosave_dir, entry.name)),
        access_security=worker_access_security(settings, entry.name),
        beamline_config=settings.beamline_values,
    )
    return spec, str(env_python) if env_python else None


def worker_env(services: Services, name: str, python: str | None) -> dict[str, str]:
    env = python_child_environ()  # no API token for plugin code
    if python is not None:  # the plugin's own environment: its subprocesses use it too
        venv = Path(python).parent.parent
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", os.defpath)])
    env.update(services.epics.worker_env(name))
    return env
