"""From a plugin name to the names the scaffold writes: class, module and test file."""

from __future__ import annotations

import keyword
import re
import sys
from dataclasses import dataclass

from iochost.config.pvnames import PLUGIN_NAME_LENGTH, PLUGIN_NAME_PATTERN

KINDS: tuple[str, ...] = ("task", "triggered", "job", "declarative")

# The loader imports a plugin's module by name with its directory first on sys.path; a
# module named like one the worker has already imported would resolve to that one instead.
_TAKEN_MODULES = frozenset(sys.stdlib_module_names) | {
    "iochost", "iocmng", "softioc", "cothread", "epicscorelibs", "pvxslibs", "p4p", "pydantic",
    "yaml", "numpy", "caproto", "setproctitle", "pvi", "tests", "conftest",
}


class ScaffoldError(Exception):
    """Why ``iochost new`` writes nothing; the CLI prints it and exits 2."""


@dataclass(frozen=True)
class PluginNames:
    name: str          # as given: the plugin (and directory) name
    class_name: str    # CamelCase
    module: str        # the plugin module, without .py
    test_module: str   # tests/<test_module>.py

    @property
    def pv_name(self) -> str:
        """The middle of every PV name: ``{PREFIX}:{pv_name}:{PV}``."""
        return self.name.upper()


def plugin_names(name: str) -> PluginNames:
    """The names for plugin ``name``; ScaffoldError if the daemon would refuse the name."""
    if not re.fullmatch(PLUGIN_NAME_PATTERN, name):
        raise ScaffoldError(
            f"invalid plugin name {name!r}: use 1 to {PLUGIN_NAME_LENGTH} characters of "
            "A-Z a-z 0-9 _ - (it names the directory and the middle of every PV name)")
    parts = [part for part in re.split(r"[-_]+", name) if part]
    class_name = "".join(part[0].upper() + part[1:] for part in parts)
    if not class_name.isidentifier() or keyword.iskeyword(class_name):  # "3d-scan", "none"
        class_name = "Plugin" + class_name
    snake = "_".join(part.lower() for part in parts)
    module = snake if snake.isidentifier() and not keyword.iskeyword(snake) else f"plugin_{snake}".rstrip("_")
    if module in _TAKEN_MODULES:
        module = f"{module}_plugin"
    return PluginNames(name=name, class_name=class_name, module=module, test_module=f"test_{snake or 'plugin'}")
