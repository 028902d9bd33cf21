"""What other threads hand the plugin thread: the messages on ``PluginHost.events``.

Record callbacks (cothread's dispatcher), supervisor commands (the channel thread) and
links (CA/PVA callbacks) only queue one of these; the plugin thread takes them in order,
so plugin code never runs concurrently with itself. One frozen dataclass per kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Union


@dataclass(frozen=True)
class PVWritten:
    """An operator's put to one of the plugin's records (by its short name)."""

    name: str
    value: Any


@dataclass(frozen=True)
class RunAdmitted:
    """A job run the worker admitted (REST ``run`` or an operator's RUN=1): execute it."""

    run_id: str
    parameters: dict[str, Any] = field(default_factory=dict)
    origin: str = "api"


@dataclass(frozen=True)
class LinkValue:
    """A new value from an input's link."""

    name: str
    value: Any


@dataclass(frozen=True)
class LinkConnection:
    """An input's or output's link connected (True) or lost (False)."""

    name: str
    connected: bool


@dataclass(frozen=True)
class StopPlugin:
    """Leave the plugin's loop: the worker is stopping."""


PluginEvent = Union[PVWritten, RunAdmitted, LinkValue, LinkConnection, StopPlugin]
Post = Callable[[PluginEvent], None]  # how links queue their events (PluginHost.events.put)
