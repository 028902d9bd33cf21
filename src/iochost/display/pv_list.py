"""A plugin's PVs described for the web dashboard: what the Phoebus panel shows, as data.

The same facts as the panel (``config.pvnames`` for the default PVs, config.yaml for the
declared ones), so the web page and the .bob agree on which PV is whose, which an operator
may write, its unit and its limits. Pure: the caller loads the config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from iochost.config import PluginConfig, PVDef
from iochost.config.pvnames import DEFAULT_PV, default_pv_names, plugin_pv_prefix
from iochost.display.catalog import default_pv_labels, status_names
from iochost.kinds import Kind

PVGroupName = Literal["plugin", "inputs", "outputs", "other"]


class PanelPV(BaseModel):
    """One PV of a plugin as its page shows it."""

    pv: str = Field(description="the full PV name")
    name: str = Field(description="the name under the plugin's prefix")
    group: PVGroupName = Field(description="plugin: a default PV; inputs, outputs: declared in config.yaml; "
                                           "other: served but not described (a ring buffer)")
    label: str
    description: str | None = None
    type: str | None = Field(default=None, description="config.yaml's type; null for a default PV")
    shape: str | None = Field(default=None, description="a default PV's: switch, command, state, text, number")
    writable: bool = Field(description="an operator writes it: an unwired input, ENABLE, RUN, CLEAR, RESET")
    unit: str | None = None
    prec: int | None = None
    low: float | None = None
    high: float | None = None
    choices: list[str] | None = Field(default=None, description="an enum's; a bool's [znam, onam]")
    link: str | None = Field(default=None, description="the external PV it is wired to")


def _listed(states: tuple[str, str] | None) -> list[str] | None:
    return None if states is None else list(states)


def _declared(base: str, short: str, pv: PVDef, group: PVGroupName) -> PanelPV:
    choices = pv.choices if pv.type == "enum" else [pv.znam or "", pv.onam or ""] if pv.type == "bool" else None
    return PanelPV(pv=f"{base}:{short}", name=short, group=group, label=pv.description or short,
                   description=pv.description, type=pv.type, writable=group == "inputs" and not pv.wired,
                   unit=pv.unit, prec=pv.prec, low=pv.low, high=pv.high, choices=choices, link=pv.link)


def plugin_pv_list(name: str, prefix: str, kind: Kind, mode: str | None, config: PluginConfig,
                   served: list[str] | None = None) -> list[PanelPV]:
    """Every PV of the plugin: its default PVs, then its inputs and outputs in config order,
    then any other PV of ``served`` (the record's list of what the worker serves)."""
    base = plugin_pv_prefix(prefix, name, config.prefix)
    labels = default_pv_labels(kind)
    listed: list[PanelPV] = []
    for default in default_pv_names(kind, mode, config.pvs):
        label, tip = labels[default]
        shape = DEFAULT_PV[default].shape
        listed.append(PanelPV(pv=f"{base}:{default}", name=default, group="plugin", label=label, description=tip,
                              shape=shape, writable=DEFAULT_PV[default].writable,
                              choices=status_names(kind) if shape == "state" else _listed(DEFAULT_PV[default].states)))
    listed += [_declared(base, short, pv, "inputs") for short, pv in config.pvs.inputs.items()]
    listed += [_declared(base, short, pv, "outputs") for short, pv in config.pvs.outputs.items()]
    known = {item.pv for item in listed}
    for full in served or []:
        if full not in known:
            short = full[len(base) + 1:] if full.startswith(base + ":") else full
            listed.append(PanelPV(pv=full, name=short, group="other", label=short, writable=False))
    return listed
