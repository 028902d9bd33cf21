"""What the displays are called and what a row of the index holds (the display catalog): no pvi here, so the
daemon imports it at start and loads the generator only when it first renders a display."""

from __future__ import annotations

from dataclasses import dataclass

from iochost.kinds import Kind

INDEX_FILE = "index.bob"


def display_file(name: str) -> str:
    """The file name of a plugin's display, relative to the index."""
    return f"{name}.bob"


@dataclass(frozen=True)
class IndexRow:
    """One plugin of the index: its name, kind and table row (1-based; None: table full), and
    the PV prefix its PVs have (None: ``PREFIX:NAME``, its name's)."""

    name: str
    kind: Kind
    row: int | None
    pv_prefix: str | None = None
