"""config.yaml: its schema (pydantic), bounded reading, PV naming rules, worker limits.

See docs/explanation/architecture.md.
"""

from iochost.config.issues import ConfigError
from iochost.config.load import load_config
from iochost.config.parameters import Parameters, plugin_mode
from iochost.config.pv_definition import PVDef
from iochost.config.schema import PluginConfig, PVGroup

__all__ = ["load_config", "ConfigError", "PluginConfig", "Parameters", "PVGroup", "PVDef", "plugin_mode"]
