"""``iochost new``: write a new plugin directory (module, config.yaml, README, a test that
runs it as a real soft IOC), so a plugin author starts from something that validates and
runs instead of from a copy of an example."""

from iochost.scaffold.plugin_names import KINDS, PluginNames, ScaffoldError, plugin_names
from iochost.scaffold.writer import scaffold_plugin

__all__ = ["KINDS", "PluginNames", "ScaffoldError", "plugin_names", "scaffold_plugin"]
