"""The environment that processes running plugin code get: the daemon's, minus its secrets.

Lives below both the settings and the store (pip, the validation probe and the workers all
use it), so neither has to import the other.
"""

from __future__ import annotations

import os

ENV_PREFIX = "IOCHOST_"
# Variables holding secrets: never handed on to plugin code (workers, the validation probe,
# pip), so a plugin that prints or ships its environment leaks no API token.
SECRET_ENV = frozenset({ENV_PREFIX + "READ_TOKEN", ENV_PREFIX + "ADMIN_TOKEN"})


def plugin_environ() -> dict[str, str]:
    """This process's environment without the secrets, for processes that run plugin code."""
    return {key: value for key, value in os.environ.items() if key not in SECRET_ENV}
