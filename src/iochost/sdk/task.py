"""TaskBase: a plugin that runs continuously or whenever an operator triggers it."""

from __future__ import annotations

from abc import abstractmethod
from collections import deque
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from iochost.sdk.base import PluginBase
from iochost.sdk.status import TaskStatus, coerce_status

_NOTHING: Mapping[str, Any] = MappingProxyType({})  # a task without links


class TaskBase(PluginBase):
    """Derive from this for a task.

    ``parameters['mode']`` picks the mode: ``continuous`` calls ``execute()`` every
    ``interval`` seconds and counts cycles on CYCLE_COUNT; ``triggered`` calls
    ``triggered()`` (by default ``execute()``) once each time an operator writes 1 to RUN;
    ``reactive`` (iocmng 2.7) calls ``on_input_changed()`` whenever a wired input changes and
    counts cycles every ``interval``. ENABLE=0 pauses every mode. Transforms and rules of the
    config (see DeclarativeTask) run before each ``execute()`` / on each change.
    """

    kind = "task"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        mode = self.parameters.get("mode") or (
            "triggered" if self.parameters.get("triggered") else "continuous"
        )
        self.mode: str = str(mode).lower()
        self.enabled = True
        self.running = False
        self.cycle_count = 0

    @abstractmethod
    def initialize(self) -> None:
        """Prepare resources; runs once on the plugin thread after the IOC is up."""

    @abstractmethod
    def execute(self) -> None:
        """One cycle of work (continuous mode) or one triggered action."""

    @abstractmethod
    def cleanup(self) -> None:
        """Release resources; runs once when the worker stops."""

    def triggered(self) -> None:
        """Run once per RUN=1 in triggered mode; defaults to ``execute()``."""
        self.execute()

    def on_input_changed(self, key: str, value: Any, old_value: Any) -> None:
        """Called on the plugin thread when a wired input's value changes: for every wired
        input in ``reactive`` mode, for inputs with ``trigger: true`` in the others."""

    # -- iocmng 2.7.9's link state: views of the worker's link engine, for the plugin thread --------
    @property
    def link_values(self) -> Mapping[str, Any]:
        """The latest value of each wired input and output, by name (iocmng's ``link_values``):
        what the rules and transforms see, read live from the worker's engine (empty without
        links). Read-only: ``set_pv`` and ``link_put`` change values."""
        return getattr(self._runtime, "link_values", _NOTHING)

    @property
    def _link_buffers(self) -> Mapping[str, deque[Any]]:
        """The ring buffer (a deque, oldest first) of each PV with ``buffer_size``, by name, as
        iocmng's ``_link_buffers``: the ones ``<name>_buf`` is read from."""
        return getattr(self._runtime, "link_buffers", _NOTHING)

    @property
    def _latched_outputs(self) -> set[str]:
        """The outputs a rule has latched (iocmng's ``_latched_outputs``): the engine's own set,
        emptied by CLEAR and RESET; discarding a name releases that latch at the next evaluation."""
        latched = getattr(self._runtime, "latched_outputs", None)
        return latched if latched is not None else set()

    def step_cycle(self) -> None:
        """Count one cycle on CYCLE_COUNT (the host counts each ``execute()`` itself; call this
        for cycles of your own)."""
        if self.mode in ("continuous", "reactive"):
            self.cycle_count += 1
            self._runtime.set_pv("CYCLE_COUNT", self.cycle_count)

    def set_status(self, status: str | int | TaskStatus) -> None:
        """Set STATUS to INIT, RUN, PAUSED, END or ERROR (name, number or TaskStatus)."""
        self._runtime.set_pv("STATUS", int(coerce_status(TaskStatus, status)))
