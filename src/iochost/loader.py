"""Import a plugin's class from its directory, the same way in the worker and the validator."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path, PurePosixPath
from types import ModuleType

from iochost.compat import install_iocmng_alias


def module_name_for(module_file: str) -> str:
    """``pkg/mod.py`` -> ``pkg.mod``: plugins import their sibling modules as usual."""
    path = PurePosixPath(module_file)
    parts = list(path.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_plugin_module(plugin_dir: Path, module_file: str) -> ModuleType:
    """Import ``module_file`` with ``plugin_dir`` first on sys.path, as the worker does.

    Raises whatever the plugin's import raises, so callers can report its traceback.
    """
    install_iocmng_alias()
    root = str(Path(plugin_dir).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(module_name_for(module_file))


def load_plugin_class(plugin_dir: Path, module_file: str, class_name: str) -> type:
    """Import ``module_file`` (``import_plugin_module``) and return the class."""
    module = import_plugin_module(plugin_dir, module_file)
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise ImportError(f"{module_file} defines no class {class_name!r}") from None
