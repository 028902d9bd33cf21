"""A task's declarative side in the worker: the engine, its links and their connection
state, applied to the PV table. The plugin thread calls every method here (PluginHost
routes link events to it), so engine state is never touched concurrently.

Cycle semantics (continuous mode): polls are started at the top of a cycle and answered
asynchronously, so a poll-mode input holds the value its latest answered read returned
(at most one cycle old); then transforms and rules are evaluated and their outputs
written. Reactive mode evaluates on every change of a wired input instead.

As in iocmng 2.7.9: a wired output shows its link's value too (read at start, then on each
monitor update or each poll, per its ``link_mode``), judged by its own alarm; it is never
written back from there, so nothing echoes between it and its device: the engine's next
write puts its own value to the link when it differs from what the link showed. ENABLE=0
pauses the monitors (``Links.pause``): no value of theirs comes after it; a read still
does (RESET's and CLEAR's, as iocmng's); ENABLE=1 opens them again.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections import deque
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from iochost.config import PluginConfig
from iochost.config.pvnames import wired_ports
from iochost.declarative.engine import Decision, Engine
from iochost.record_sizes import STRING_LENGTH
from iochost.record_text import readable
from iochost.rule_language import functions
from iochost.worker.convert import ConversionError
from iochost.worker.links import Links
from iochost.worker.plugin_events import Post

if TYPE_CHECKING:
    from iochost.worker.records import PVTable

log = logging.getLogger("iochost.worker")
LINK_DOWN = ("INVALID", "LINK")  # EPICS' alarm of a value whose link failed


class Wiring:
    def __init__(self, config: PluginConfig, table: PVTable, post: Post) -> None:
        self.config = config
        self.table = table
        pvs = config.pvs
        self.inputs = wired_ports(pvs, "inputs")
        self.outputs = wired_ports(pvs, "outputs")
        ports = {name: pvs.inputs[name] for name in self.inputs}
        ports.update({name: pvs.outputs[name] for name in self.outputs})
        monitored = {name for name, pv in ports.items() if pv.link_mode == "monitor"}
        parameters = config.parameters
        self.links = Links(ports, monitored, pva=parameters.pva, timeout=parameters.timeout, post=post)
        self.engine = Engine(config, {name: table.held_value(name) for name in [*pvs.inputs, *pvs.outputs]},
                             functions.LIBRARY)
        self.connected: dict[str, bool] = {name: False for name in ports}
        self._polled_at: dict[str, float] = {}
        self._errors: set[str] = set()
        self._forwarded: dict[str, Any] = {}  # each wired output's link's value: written, or read back
        self._unconfirmed: dict[str, Any] = {}  # written to a link and not yet read back from it
        self._writes: dict[str, int] = {}  # how many writes each output's link has been sent
        self._read_from: dict[str, int] = {}  # a polled output's: how many when its read was started
        self.paused = False  # ENABLE=0: the link monitors bring no values
        self._untrusted: set[str] = set()  # outputs computed from a down input, shown INVALID/LINK
        self._refused: dict[str, str] = {}  # inputs whose link value did not convert: why (logged once)
        self.rule_message = False  # MESSAGE shows a rule's message

    @property
    def active(self) -> bool:
        return bool(self.links.ports) or self.engine.active

    def start(self, enabled: bool = True) -> None:
        for name in self.inputs:  # not connected yet: the mirror says so
            self.table.set_alarm(name, *LINK_DOWN)
        self.paused = self.links.paused = not enabled
        self.links.start()
        if enabled:
            self.poll(force=True)

    def set_enabled(self, enabled: bool) -> None:
        """ENABLE: 0 pauses the link monitors (what changes meanwhile reaches the PVs or their
        ring buffers only through a read: RESET's, CLEAR's), 1 opens them again: each brings
        its PV's value now, once."""
        if self.paused == (not enabled):
            return
        self.paused = not enabled
        if enabled:
            self.links.resume()
        else:
            self.links.pause()
        log.info("link monitors %s (ENABLE=%d)", "resumed" if enabled else "paused", int(enabled))
        if enabled:
            for name, value in self._unconfirmed.items():
                if self.connected[name]:
                    self._put(name, value)  # a write missed while down, held back while paused

    def close(self) -> None:
        self.links.close()

    # -- values -----------------------------------------------------------------------
    def set_pv(self, name: str, value: Any, severity: Any = None, alarm: Any = None, *,
               refused: str = "SOFT") -> None:
        """Every write of a plugin PV (by the plugin or the engine): the record, the engine's
        view, and the link of a wired output (iocmng forwards those). A value that does not
        convert to the PV's type raises ConversionError (``PVTable.set_pv``)."""
        self.table.set_pv(name, value, severity, alarm, refused=refused)
        if name in self.engine.values or name in self.outputs:
            stored = self.table.held_value(name)  # as the record holds it (clamped, converted; a string's bytes)
            if name in self.engine.values:
                self.engine.update(name, stored)
            if name in self.outputs:
                self._forward(name, stored)

    def _forward(self, name: str, value: Any) -> None:
        """Write a wired output's value to its link when it differs from the link's."""
        if name not in self._forwarded or self._forwarded[name] != value:
            self._unconfirmed[name] = value
            self._put(name, value)

    def _put(self, name: str, value: Any) -> None:
        """Send ``value`` to the output's link, counted: a polled read started before it is stale."""
        self._forwarded[name] = value
        self._writes[name] = self._writes.get(name, 0) + 1
        self.links.put(name, value)

    # the rest of the runtime a plugin sees (PluginRuntime): the table's
    def set_alarm(self, name: str, severity: Any, alarm: Any = None) -> None:
        self.table.set_alarm(name, severity, alarm)

    def get_pv(self, name: str) -> Any:
        return self.table.get_pv(name)

    def pv_names(self) -> list[str]:
        return self.table.pv_names()

    # iocmng's attributes of a task's link state, as views of the engine's own (plugin thread only)
    @property
    def link_values(self) -> Mapping[str, Any]:
        """Each wired input's and output's latest value, by name: a live, read-only view."""
        return WiredValues(self.engine.values, self.links.ports)

    @property
    def link_buffers(self) -> Mapping[str, deque[Any]]:
        """The ring buffer of each PV with ``buffer_size``: the engine's deques, read-only mapping."""
        return MappingProxyType(self.engine.buffers)

    @property
    def latched_outputs(self) -> set[str]:
        """The engine's set of latched outputs itself: discarding a name releases that latch,
        as in iocmng (its rule_defaults value is written at the next evaluation)."""
        return self.engine.latched

    def link_put(self, name: str, value: Any) -> None:
        if name not in self.links.ports:
            raise KeyError(f"{name!r} is not a wired PV; wired: {', '.join(self.links.ports) or '(none)'}")
        self.links.put(name, value)

    def on_link_value(self, name: str, value: Any) -> tuple[Any, bool]:
        """A wired input's new value, in the input's type: (the old one, whether it changed).
        A value that does not convert leaves the input as it was, INVALID/LINK (as EPICS marks
        a record whose input link's value it cannot convert), and so everything computed from
        it; logged once until the reason changes. A wired output's is read back
        (``_read_back``). Paused (ENABLE=0), what comes is a read's answer (RESET, CLEAR) or
        a monitor's update sent before the pause: taken, as iocmng takes them."""
        if name in self.outputs:
            return self._read_back(name, value)
        if name not in self.inputs:
            return None, False
        try:
            self.table.set_pv(name, value, refused="LINK")  # clears the LINK alarm: this value is live
        except ConversionError as exc:
            if self._refused.get(name) != str(exc):
                log.error("link %s (%s): %s", name, self.links.ports[name].link, exc)
            self._refused[name] = str(exc)
            self._mark_untrusted()
            return _shown(self.engine.values.get(name)), False
        if self._refused.pop(name, None) is not None:
            log.info("link %s (%s): its values convert again", name, self.links.ports[name].link)
            self._mark_untrusted()
        old = self.engine.update(name, self.table.held_value(name))  # a string's bytes, not softioc's U+FFFD
        return _shown(old), self.engine.values[name] != old

    def _read_back(self, name: str, value: Any) -> tuple[Any, bool]:
        """A wired output's link value, shown by the output (its own alarm judges it; one
        computed from a down input stays INVALID/LINK) and seen by expressions and its ring
        buffer, as iocmng's link_values; not written back. (old, changed): changed only for
        an output with ``trigger: true``, as iocmng calls on_input_changed for those alone.
        A polled value read before the output's latest write is older than it: dropped (the
        output would show its previous value for a cycle, and be written again)."""
        if self.links.ports[name].link_mode == "poll" and self._read_from.get(name, 0) != self._writes.get(name, 0):
            return _shown(self.engine.values.get(name)), False
        try:
            self.table.set_pv(name, value, refused="LINK")
        except ConversionError as exc:
            if self._refused.get(name) != str(exc):
                log.error("link %s (%s): %s", name, self.links.ports[name].link, exc)
            self._refused[name] = str(exc)
            self._forwarded.pop(name, None)  # the link holds neither: the next write goes to it
            return _shown(self.engine.values.get(name)), False
        if self._refused.pop(name, None) is not None:
            log.info("link %s (%s): its values convert again", name, self.links.ports[name].link)
        if name in self._untrusted:
            self.table.set_alarm(name, *LINK_DOWN)
        held = self.table.held_value(name)
        self._forwarded[name] = held  # the link has it: no need to write it there
        if name in self._unconfirmed and self._unconfirmed[name] == held:
            del self._unconfirmed[name]
        old = self.engine.update(name, held)
        return _shown(old), self.links.ports[name].trigger and held != old

    def on_operator_write(self, name: str, value: Any) -> None:
        if name in self.engine.values:
            self.engine.update(name, value)

    def on_connection(self, name: str, connected: bool) -> None:
        if self.connected.get(name) == connected:
            return
        self.connected[name] = connected
        log.log(logging.INFO if connected else logging.WARNING, "link %s (%s) %s", name,
                self.links.ports[name].link, "connected" if connected else "DISCONNECTED")
        group, pv = (self.inputs, "CONN_INP") if name in self.inputs else (self.outputs, "CONN_OUT")
        self.table.set_pv(pv, [int(self.connected[port]) for port in group])
        if name in self.inputs and not connected:
            self.table.set_alarm(name, *LINK_DOWN)
        if name in self.outputs and connected and name in self._unconfirmed:
            if self.paused:  # ENABLE=0: nothing is written; ENABLE=1 sends it
                log.info("link %s (%s): the write it missed waits for ENABLE=1", name, self.links.ports[name].link)
            else:
                self._put(name, self._unconfirmed[name])  # a write it may have missed while down
        self._mark_untrusted()

    def _mark_untrusted(self) -> None:
        """INVALID/LINK on every output computed from a down input; once its inputs are back,
        the record is processed again so its own alarm (``alarm_on``, limits) is what shows."""
        down = {name for name in self.inputs if not self.connected[name] or name in self._refused}
        untrusted = self.engine.depends_on(down)
        for name in untrusted:
            self.table.set_alarm(name, *LINK_DOWN)
        for name in self._untrusted - untrusted:
            self.table.set_pv(name, self.table.held_value(name))  # a string's bytes as they are
        self._untrusted = untrusted

    # -- the cycle ----------------------------------------------------------------------
    def poll(self, force: bool = False) -> None:
        """Start the reads that are due (every cycle, or per ``poll_rate``; ``force``: every
        poll link, and every input's, as iocmng reads its inputs at start and RESET); never waits."""
        now = time.monotonic()
        due = []
        for name, pv in self.links.ports.items():  # outputs too: iocmng reads them back
            if pv.link_mode != "poll" and not (force and name in self.inputs):
                continue
            if not force and pv.poll_rate is not None and now - self._polled_at.get(name, -1e9) < pv.poll_rate:
                continue
            self._polled_at[name] = now
            if name in self.outputs:
                self._read_from[name] = self._writes.get(name, 0)
            due.append(name)
        self.links.poll(due)

    def evaluate(self) -> Decision:
        decision = self.engine.evaluate()
        for name, value in decision.outputs.items():
            self._computed(name, value, decision.errors)
        for key, value in decision.actuators.items():
            self.links.put(key, value)
        self._show(decision)
        self._mark_untrusted()
        for error in set(decision.errors) - self._errors:
            log.error("expression failed: %s", error)  # once per distinct error, not every cycle
        self._errors = set(decision.errors)
        return decision

    def _show(self, decision: Decision) -> None:
        """MESSAGE shows the first fired rule's message (iocmng logs it and writes it only to
        ``message_pv``, timestamped; we do that too); back to "Running" once no rule fires
        and nothing is latched."""
        stamp = datetime.datetime.now().strftime("%d/%m/%y %H:%M:%S")
        for rule in decision.fired:
            if rule.message_pv and rule.message:
                self._computed(rule.message_pv, f"{stamp} - {rule.message}"[:STRING_LENGTH], decision.errors)
        if decision.fired:
            rule = decision.fired[0]
            text = rule.message or f"Rule {rule.id or 0} fired"
            if not self.rule_message or self.table.get_pv("MESSAGE") != text[:STRING_LENGTH]:
                log.warning("rule %s fired: %s", rule.id, text)
                self.table.set_pv("MESSAGE", text)
            self.rule_message = True
        elif self.rule_message and not self.engine.latched:
            self.table.set_pv("MESSAGE", "Running")
            self.rule_message = False

    def _computed(self, name: str, value: Any, errors: list[str]) -> None:
        """Write an output the engine computed; one that does not convert to the output's type
        is INVALID/CALC and an error of this evaluation (logged once while it lasts)."""
        try:
            self.set_pv(name, value, refused="CALC")
        except ConversionError as exc:
            errors.append(str(exc))

    def clear(self, retry_dead: bool = True) -> None:
        """CLEAR: release latches (outputs back to rule_defaults) and retry dead inputs
        (RESET re-reads every input itself, so it passes ``retry_dead=False``)."""
        errors: list[str] = []
        for name, value in self.engine.clear().items():
            self._computed(name, value, errors)
        for error in errors:
            log.error("CLEAR: %s", error)
        log.info("CLEAR: latches released")
        if retry_dead:
            self.links.poll([name for name in self.inputs if not self.connected[name]])
        if self.rule_message:
            self.table.set_pv("MESSAGE", "Cleared")
            self.rule_message = False


class WiredValues(Mapping[str, Any]):
    """The engine's values of the wired PVs alone, as plugin code is shown them (``_shown``);
    it reads the engine at each access, so it never lags behind it."""

    def __init__(self, values: Mapping[str, Any], wired: Mapping[str, Any]) -> None:
        self._values = values
        self._wired = wired

    def __getitem__(self, name: str) -> Any:
        if name not in self._wired:
            raise KeyError(name)
        return _shown(self._values.get(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._wired)

    def __len__(self) -> int:
        return len(self._wired)

    def __repr__(self) -> str:
        return repr(dict(self))


def _shown(value: Any) -> Any:
    """An engine value as plugin code is shown it: a string's bytes that are not UTF-8 as
    U+FFFD (``record_text.readable``), as ``get_pv`` shows the new one."""
    return readable(value) if isinstance(value, str) else value
