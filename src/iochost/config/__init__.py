"""config.yaml schema (pydantic) and PV naming rules; see docs/ARCHITECTURE.md."""

from iochost.config.schema import Parameters, PluginConfig, PVDef, PVGroup, plugin_mode
from iochost.config.errors import ConfigError
from iochost.config.load import load_config

__all__ = ["load_config", "ConfigError", "PluginConfig", "Parameters", "PVGroup", "PVDef", "plugin_mode"]
