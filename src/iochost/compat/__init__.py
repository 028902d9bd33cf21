"""Make iocmng 2.x plugins load unchanged.

Inside a worker or the validator's import probe, ``import iocmng``,
``from iocmng import TaskBase, JobBase`` and ``from iocmng.base.job import JobResult``
must resolve to iochost's SDK. Registering modules in ``sys.modules`` does that without
shipping a second top-level package that could shadow a real iocmng install elsewhere.
iocmng's names are views of iochost's public ones (``iocmng.run_ioc`` is ``iochost.run_ioc``).
"""

from __future__ import annotations

import sys
import types

from iochost import run_ioc, sdk
from iochost.compat.safe_eval import safe_eval
from iochost.rule_language import functions
from iochost.sdk import job, pv_client, task

_ALIASES: dict[str, dict[str, object]] = {
    "iocmng": {"TaskBase": sdk.TaskBase, "JobBase": sdk.JobBase, "JobResult": sdk.JobResult,
               "DeclarativeTask": sdk.DeclarativeTask, "pv_client": pv_client, "run_ioc": run_ioc},
    "iocmng.base": {"TaskBase": sdk.TaskBase, "JobBase": sdk.JobBase, "JobResult": sdk.JobResult},
    "iocmng.base.task": {"TaskBase": task.TaskBase},
    "iocmng.base.job": {"JobBase": job.JobBase, "JobResult": job.JobResult},
    "iocmng.declarative": {"DeclarativeTask": sdk.DeclarativeTask},
    "iocmng.core": {"pv_client": pv_client},
    "iocmng.core.functions": {"register": functions.register, "get_registry": functions.get_registry},
    "iocmng.core.safe_eval": {"safe_eval": safe_eval},
    "iocmng.runner": {"run_ioc": run_ioc},
}
# Modules given as they are: a plugin's ``iocmng.core.pv_client`` is iochost's, state and all.
_MODULES = {"iocmng.core.pv_client": pv_client}
_PACKAGES = ("iocmng", "iocmng.base", "iocmng.core")


def install_iocmng_alias() -> None:
    """Register the ``iocmng`` modules as views of iochost's SDK (idempotent)."""
    for name, attrs in _ALIASES.items():
        module = types.ModuleType(name, f"iochost alias of {name} for iocmng plugins")
        module.__dict__.update(attrs)
        if name in _PACKAGES:
            module.__path__ = []  # a package, so submodule imports resolve through sys.modules
        sys.modules[name] = module
    sys.modules.update(_MODULES)
    sys.modules["iocmng"].base = sys.modules["iocmng.base"]  # type: ignore[attr-defined]
    sys.modules["iocmng.base"].task = sys.modules["iocmng.base.task"]  # type: ignore[attr-defined]
    sys.modules["iocmng.base"].job = sys.modules["iocmng.base.job"]  # type: ignore[attr-defined]
    sys.modules["iocmng"].declarative = sys.modules["iocmng.declarative"]  # type: ignore[attr-defined]
    sys.modules["iocmng"].core = sys.modules["iocmng.core"]  # type: ignore[attr-defined]
    sys.modules["iocmng.core"].functions = sys.modules["iocmng.core.functions"]  # type: ignore[attr-defined]
    sys.modules["iocmng.core"].safe_eval = sys.modules["iocmng.core.safe_eval"]  # type: ignore[attr-defined]
