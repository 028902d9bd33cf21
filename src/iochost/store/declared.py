"""Which plugins the plugins file manages: the names its entries gave when it was last applied.

The registry does not say where a plugin came from, and it need not: a plugin the file
declares is managed by the file from then on (whether the file added it or took over a name
an operator had added over REST), and one whose entry leaves the file is either deleted or
released to the operators (``Settings.plugins_file_removed``). To tell "left the file" from
"never was in it", the daemon keeps the names of the last applied file here
(``DATA_DIR/declared.json``, written atomically like the registry).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from iochost.durable import remove_stale_temps, write_atomically

log = logging.getLogger("iochost.store")


class DeclaredNames:
    """The names the plugins file declared when it was last applied."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> set[str]:
        """The names saved last; none if there is no file. An unreadable file is logged and
        counts as none: nothing is deleted for leaving a file the daemon cannot read."""
        try:
            document = json.loads(self.path.read_bytes())
            names = document["names"]
            if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
                raise ValueError("`names` is not a list of strings")
        except FileNotFoundError:
            return set()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("%s cannot be read (%s: %s); no plugin leaves the plugins file this time",
                      self.path, type(exc).__name__, exc)
            return set()
        return set(names)

    def save(self, names: set[str]) -> None:
        """Replace the saved names (durable once this returns)."""
        remove_stale_temps(self.path)
        write_atomically(self.path, json.dumps({"names": sorted(names)}, indent=2).encode() + b"\n")
