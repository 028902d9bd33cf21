"""config.yaml schema (pydantic) and PV naming rules; see docs/ARCHITECTURE.md."""

from iochost.spec.config import Parameters, PluginConfig, PVDef, PVGroup
from iochost.spec.errors import ConfigError
from iochost.spec.load import load_config

__all__ = ["load_config", "ConfigError", "PluginConfig", "Parameters", "PVGroup", "PVDef"]
