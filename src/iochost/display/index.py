"""The daemon's index display: its own PVs at the top, one row per plugin below.

Rows come in as plain data (``IndexRow``), so the generator knows nothing of the
supervisor: a row's STATE binds to the daemon's table PVs
``{PREFIX}:IOCHOST:ROW{n:03d}:STATE`` (None when the table is full), STATUS and MESSAGE to
the plugin's own PVs, and its button opens ``<name>.bob`` by a relative file name, so the
files work from any folder they are copied to together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, get_args

from pvi.device import ComponentUnion, Device, DeviceRef, Grid, Group, Row, SignalR, SignalX, TextFormat, TextRead

from iochost.config.pvnames import plugin_pv_prefix
from iochost.display.bob import SPACING, Layout, label_width, render, value_width
from iochost.display.catalog import IndexRow, display_file, status_names
from iochost.kinds import Kind
from iochost.record_sizes import STRING_LENGTH
from iochost.supervisor.daemon_ioc import CONTROL_MSG, CONTROL_PVS, SYSTEM_NAME, row_pv, system_config
from iochost.supervisor.states import State

if TYPE_CHECKING:
    from iochost.settings import Settings

DAEMON_PVS = ("PLUGINS", "RUNNING", "FAILED", "HEALTH", "UPTIME")  # of daemon_ioc.system_config
NAME_WIDTH = 200  # of a row's plugin name
COLUMN_WIDTH = 120  # of each cell of a row


def daemon_pv_prefix(prefix: str) -> str:
    """``IOCHOST:IOCHOST``: where the daemon's own PVs live."""
    return plugin_pv_prefix(prefix, SYSTEM_NAME)


def table_pv(prefix: str, row: int, field: str) -> str:
    """``{PREFIX}:IOCHOST:ROW007:STATE``: one cell of the daemon's plugin table."""
    return f"{daemon_pv_prefix(prefix)}:{row_pv(row, field)}"


def daemon_labels(settings: "Settings") -> dict[str, str]:
    """The descriptions of the daemon IOC's PVs, from the one list of them."""
    outputs = system_config(settings)["pvs"]["outputs"]
    return {pv: spec["description"] for pv, spec in outputs.items() if spec.get("description")}


def _daemon_group(prefix: str, control: bool, labels: Mapping[str, str]) -> Group:
    base = daemon_pv_prefix(prefix)
    children: list[ComponentUnion] = []
    for i, pv in enumerate(DAEMON_PVS, 1):
        full = f"{base}:{pv}"
        label = labels.get(pv) or pv
        children.append(SignalR(name=f"Daemon{i}", label=label, description=full, read_pv=full,
                                read_widget=TextRead()))
    if control:
        full = f"{base}:{CONTROL_MSG}"
        children.append(SignalR(name="ControlMsg", label="Last control", description=full, read_pv=full,
                                read_widget=TextRead(format=TextFormat.string)))
    return Group(name="Daemon", label=f"Daemon ({base})", layout=Grid(), children=children)


def _row(prefix: str, index: int, row: IndexRow, control: bool, header: bool) -> Group:
    plugin = row.pv_prefix or plugin_pv_prefix(prefix, row.name)
    columns: list[ComponentUnion] = []
    titles: list[str] = []
    if row.row is not None:
        columns += [
            SignalR(name="Kind", read_pv=table_pv(prefix, row.row, "KIND"),
                    read_widget=TextRead(format=TextFormat.string)),
            SignalR(name="State", read_pv=table_pv(prefix, row.row, "STATE"), read_widget=TextRead()),
        ]
        titles += ["Kind", "State"]
    columns += [
        SignalR(name="Status", read_pv=f"{plugin}:STATUS", read_widget=TextRead()),
        SignalR(name="Message", read_pv=f"{plugin}:MESSAGE", read_widget=TextRead(format=TextFormat.string)),
        DeviceRef(name="Display", label="Open", pv=plugin, ui=display_file(row.name)),
    ]
    titles += ["Status", "Message", "Display"]
    if control:
        for verb in CONTROL_PVS:
            columns.append(SignalX(name=verb.title(), label=verb.title(),
                                   write_pv=f"{daemon_pv_prefix(prefix)}:{verb}", value=row.name))
            titles.append(verb.title())
    label = row.name if row.row is not None else f"{row.name} ({row.kind})"
    return Group(name=f"Row{index}", label=label, description=f"{row.kind} {plugin}",
                 layout=Row(header=titles if header else None), children=columns)


def table_layout(columns: int, label: int = NAME_WIDTH, column: int = COLUMN_WIDTH) -> Layout:
    """pvi's widths that make a group of ``Row``s come out with ``label``-wide row names and
    ``column``-wide cells: pvi squeezes a row into one label + one widget width, scaling
    the label as it goes, so solve its two equations for the widths it is given."""
    s, n = SPACING, columns
    widget = round((label + n * column - 2 * s + s * n - label * s / column) / (label / column + 1))
    return Layout(label_width=round(label * (widget + s) / column), widget_width=widget)


def index_parts(prefix: str, rows: list[IndexRow], control: bool,
                labels: Mapping[str, str] | None = None) -> list[Device]:
    """The pvi ``Device``s of the index: the daemon's PVs (with the title), then one table
    of the plugins in the daemon's table and one of those beyond it, in name order."""
    ordered = sorted(rows, key=lambda r: r.name)
    tables = [
        ("Plugins", "Plugins", [r for r in ordered if r.row is not None]),
        ("More", "More plugins (beyond the daemon's table: no KIND or STATE PVs)",
         [r for r in ordered if r.row is None]),
    ]
    parts = [Device(label=f"iochost {prefix}", children=[_daemon_group(prefix, control, labels or {})])]
    for name, label, members in tables:
        if members:
            parts.append(Device(label="", children=[Group(name=name, label=label, layout=Grid(), children=[
                _row(prefix, i, r, control, header=i == 1) for i, r in enumerate(members, 1)])]))
    return parts


def index_display(prefix: str, rows: list[IndexRow], control: bool = False,
                  labels: Mapping[str, str] | None = None) -> bytes:
    """The .bob XML of the daemon's index display; ``labels``: the daemon PVs' descriptions
    (``daemon_labels``), else their names."""
    first, *tables = index_parts(prefix, rows, control, labels)
    more = []
    for table in tables:
        group = table.children[0]
        assert isinstance(group, Group)
        names = [row.label or "" for row in group.children if isinstance(row, Group)]
        row = group.children[0]
        assert isinstance(row, Group)
        more.append((table, table_layout(len(row.children), label=label_width(names, least=NAME_WIDTH))))
    daemon = first.children[0]
    assert isinstance(daemon, Group)
    daemon_row_labels = [child.label or "" for child in daemon.children if isinstance(child, SignalR)]
    return render(first, layout=Layout(label_width=label_width(daemon_row_labels, least=NAME_WIDTH), widget_width=300),
                  more=more, columns=column_widths(), widths={
                      f"{daemon_pv_prefix(prefix)}:{CONTROL_MSG}": value_width(characters=STRING_LENGTH)})


def column_widths() -> dict[str, int]:
    """A table column's width that shows what its cells can hold: a kind, a state, a status
    name, a whole MESSAGE (39 characters of prose)."""
    return {"Kind": value_width(get_args(Kind)), "State": value_width(state.value for state in State),
            "Status": value_width(status_names("task") + status_names("job")),
            "Message": value_width(characters=STRING_LENGTH)}
