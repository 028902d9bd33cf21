"""Phoebus displays generated with pvi: one per plugin, and the daemon's index."""

from iochost.display.index import INDEX_FILE, IndexRow, display_file, index_display
from iochost.display.plugin import plugin_display, plugin_display_from_dir

__all__ = ["INDEX_FILE", "IndexRow", "display_file", "index_display", "plugin_display", "plugin_display_from_dir"]
