"""Git checkouts of plugins and the persisted registry of their desired state.

`GitStore` fetches a plugin source into `data_dir/plugins/<name>` (temp dir + rename,
nothing left on failure) and restores it offline after a restart; `Registry` persists
what was added, at which commit, in which desired state; `check_source_allowed` is the
source policy of the REST API.
"""

from iochost.store.entries import (
    DESIRED_RUNNING,
    DESIRED_STOPPED,
    DesiredState,
    FetchResult,
    PluginSource,
    RegistryEntry,
)
from iochost.store.gitstore import GitStore
from iochost.store.paths import check_name, resolve_plugin_dir
from iochost.store.policy import (
    check_source_allowed,
    has_credentials,
    validate_prefixes,
)
from iochost.store.registry import FORMAT_VERSION, Registry, RegistryError

__all__ = [
    "DESIRED_RUNNING",
    "DESIRED_STOPPED",
    "DesiredState",
    "FORMAT_VERSION",
    "FetchResult",
    "GitStore",
    "PluginSource",
    "Registry",
    "RegistryEntry",
    "RegistryError",
    "check_name",
    "check_source_allowed",
    "has_credentials",
    "resolve_plugin_dir",
    "validate_prefixes",
]
