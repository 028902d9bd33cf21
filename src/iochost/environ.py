"""The environment that processes running plugin code get: the daemon's, minus its secrets.

Lives below both the settings and the store (pip, the validation probe and the workers all
use it), so neither has to import the other.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_PREFIX = "IOCHOST_"
# Variables holding secrets: never handed on to plugin code (workers, the validation probe,
# pip), so a plugin that prints or ships its environment leaks no API token.
SECRET_ENV = frozenset({ENV_PREFIX + "READ_TOKEN", ENV_PREFIX + "ADMIN_TOKEN"})


def plugin_environ() -> dict[str, str]:
    """This process's environment without the secrets, for processes that run plugin code."""
    return {key: value for key, value in os.environ.items() if key not in SECRET_ENV}


def python_child_environ() -> dict[str, str]:
    """``plugin_environ`` plus what every Python process of ours that runs plugin code needs:
    this very iochost first on its path, and one BLAS thread (~35 MB less per process)."""
    env = plugin_environ()
    env["OPENBLAS_NUM_THREADS"] = "1"
    source_root = str(Path(__file__).resolve().parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if source_root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([source_root, *paths])
    return env
