"""Links: the external PVs a plugin's wired inputs and outputs are tied to (iocmng 2.7).

Nothing here ever blocks the caller. Every wired PV gets a subscription that reports its
connection state (and, for ``link_mode: monitor``, its values); a poll is an asynchronous
read started by the plugin thread, answered later; a write is asynchronous and coalesced
(while one is in flight only the newest value waits). So a dead or slow link costs its own
timeouts, never the cycle or the other links: iocmng 2.7.9 reads and reconnects inline and
stalls its cycle on one dead PV.

What happens arrives as events on the plugin thread's queue (``post``):
``("link", name, value)``, ``("conn", name, connected)``. CA runs on cothread (the
worker's main thread, already serving the IOC), PVA on p4p's own threads.

``pause()`` (ENABLE=0) stops the monitors' values, as iocmng 2.7.9 closes its monitors: a
paused link reports its connection only (CA: a DBE_PROPERTY subscription; PVA, which has no
such thing, drops the values it is sent). ``resume()`` opens each monitor again, so its first
update is the PV's value now, once, as iocmng's new monitor gives it. A read (a poll, RESET's,
CLEAR's) is answered paused or not, as iocmng's reads are.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy

from iochost.config import PVDef
from iochost.record_sizes import STRING_LENGTH
from iochost.record_text import fit_bytes, readable, text_bytes
from iochost.worker.convert import Choice, UnreadableText, base_value
from iochost.worker.plugin_events import LinkConnection, LinkValue, Post

log = logging.getLogger("iochost.worker.links")

DBE_VALUE, DBE_ALARM, DBE_PROPERTY = 1, 4, 8
DBR_STRING, DBR_CHAR = 0, 4  # CA field types: a stringin/stringout VAL (40 bytes); a long string's chars


def plain(value: Any) -> Any:
    """A CA/PVA value as plain Python for ``convert.to_pv``: float, int, str, bytes (a CA
    string's, read as bytes), ``UnreadableText`` (a PVA string p4p could not decode), a numpy array
    (its dtype kept: a char array is a long string's text), an enum as a ``Choice`` (index
    and name, from cothread's FORMAT_CTRL ``enums`` or the choices of p4p's NTEnum)."""
    enums = getattr(value, "enums", None)
    if enums is not None:
        index = int(value)
        return Choice(index, enums[index] if 0 <= index < len(enums) else None)
    if isinstance(value, int) and hasattr(value, "choice"):
        # not ntenum.choice: p4p caches choices in one unwrapper per Context, lost whenever a
        # value of another NT type passes through it (then .choice is None); the Value has them
        enum: Any = value  # p4p's ntenum: an int that carries its Value
        choices = enum.raw["value.choices"]
        index = int(value)
        return Choice(index, choices[index] if 0 <= index < len(choices) else None)
    if isinstance(value, numpy.ndarray):
        return numpy.array(value)  # a plain copy: not cothread's or p4p's subclass
    return base_value(value)


def _pva_unwrappers() -> dict[str, Any]:
    """p4p's NT unwrappers, but an NTScalar whose text is not UTF-8 (a CA client wrote Latin-1
    to the record; PVA carries the bytes, p4p decodes them strictly) is ``UnreadableText``,
    which the input refuses: p4p would log a traceback per update and, in a monitor, close
    the subscription for good."""
    from p4p.nt import NTScalar

    class TextSafeNTScalar(NTScalar):
        @classmethod
        def unwrap(cls, value: Any) -> Any:
            try:
                return super().unwrap(value)
            except UnicodeDecodeError as exc:
                return UnreadableText(f"PVA carries text as UTF-8, and the link's is not ({exc})")

    return {"epics:nt/NTScalar:1.0": TextSafeNTScalar}


class _Writes:
    """Coalesced asynchronous writes: one in flight per link, only the newest waiting."""

    def __init__(self, send: Callable[[str, Any], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._waiting: dict[str, Any] = {}

    def put(self, name: str, value: Any) -> None:
        with self._lock:
            if name in self._busy:
                self._waiting[name] = value
                return
            self._busy.add(name)
        self._send(name, value)

    def done(self, name: str) -> None:
        """The write of ``name`` finished: send the value that waited, if any."""
        with self._lock:
            if name not in self._waiting:
                self._busy.discard(name)
                return
            value = self._waiting.pop(name)
        self._send(name, value)


class Links:
    """The links of one plugin. ``ports`` maps each wired PV's short name to its definition;
    ``monitored`` are the ports (inputs, and outputs read back) whose every change comes to us
    while not paused (the others: connection only)."""

    def __init__(self, ports: dict[str, PVDef], monitored: set[str], *, pva: bool, timeout: float,
                 post: Post) -> None:
        self.ports = ports
        self.monitored = monitored
        self.pva = pva
        self.timeout = timeout
        self.post = post
        self._reading: set[str] = set()
        self._read_lock = threading.Lock()
        self._writes = _Writes(self._start_put)
        self.paused = False  # ENABLE=0: the monitors report connection only
        self._pva_monitors: dict[str, Any] = {}  # PVA: each link's subscription, by short name
        # PVA: each link's current subscription's token. p4p's close() does not stop a callback
        # already running on its threads: a replaced subscription's late update is dropped here
        self._pva_current: dict[str, object] = {}
        self._pva_reopened: set[object] = set()  # tokens of monitors opened again, before their first update
        self._pva_lock = threading.Lock()
        self._ca_monitors: dict[str, Any] = {}  # CA: each link's subscription, by short name
        self._ca_strings: set[str] = set()  # CA links to a DBF_STRING channel: read as bytes
        self._ca_chars: dict[str, int] = {}  # CA links to a char array (a long string): its length
        self._context: Any = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def protocol(self) -> str:
        return "pva" if self.pva else "ca"

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        if not self.ports:
            return
        if self.pva:
            from p4p.client.thread import Context

            self._context = Context("pva", nt=_pva_unwrappers())  # NT types unwrapped: ntfloat, ntstr, numpy arrays
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="iochost-pva-link")
            for name in self.ports:
                self._pva_monitor(name)
        else:
            import cothread

            cothread.CallbackResult(self._ca_subscribe)
        log.info("%d link(s) over %s: %s", len(self.ports), self.protocol.upper(),
                 ", ".join(f"{n} -> {pv.link} ({pv.link_mode})" for n, pv in self.ports.items()))

    def pause(self) -> None:
        """ENABLE=0: the monitors stop bringing values (their connection is still followed)."""
        self._resubscribe(paused=True)

    def resume(self) -> None:
        """ENABLE=1: each monitor opened again; its first update is the PV's value now."""
        self._resubscribe(paused=False)

    def _resubscribe(self, paused: bool) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        names = [name for name in self.ports if name in self.monitored]
        if not names or not (self._pva_monitors or self._ca_monitors):
            return  # not started (or no monitor): start() subscribes as ``paused`` says
        if self.pva:
            for name in names:
                old = self._pva_monitors.pop(name)
                self._pva_monitor(name)  # from here on, ``old``'s updates are not passed on
                old.close()
        else:
            import cothread

            def again() -> None:
                for name in names:
                    self._ca_monitors.pop(name).close()
                    self._ca_monitor(name, as_bytes=name in self._ca_strings)

            cothread.CallbackResult(again)

    def close(self) -> None:
        if self.pva:
            with self._pva_lock:
                self._pva_current = {}
                self._pva_reopened = set()
            for subscription in self._pva_monitors.values():
                subscription.close()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            if self._context is not None:
                self._context.close()
        elif self._ca_monitors:
            import cothread

            cothread.CallbackResult(lambda: [s.close() for s in self._ca_monitors.values()])
        self._pva_monitors = {}
        self._ca_monitors = {}

    # -- requests from the plugin thread ------------------------------------------------
    def poll(self, names: list[str]) -> None:
        """Start a read of each of ``names`` not already being read; answers come as events."""
        for name in names:
            with self._read_lock:
                if name in self._reading:
                    continue  # a slow or dead link: the read before this one is still out
                self._reading.add(name)
            if self.pva:
                assert self._pool is not None
                self._pool.submit(self._pva_get, name)
            else:
                import cothread

                cothread.Callback(cothread.Spawn, self._ca_get, name)

    def put(self, name: str, value: Any) -> None:
        """Write ``value`` to the link of ``name`` (an output forwarded, or an actuator)."""
        self._writes.put(name, value)

    def _start_put(self, name: str, value: Any) -> None:
        if self.pva:
            assert self._pool is not None
            self._pool.submit(self._pva_put, name, value)
        else:
            import cothread

            cothread.Callback(cothread.Spawn, self._ca_put, name, value)

    def _read_done(self, name: str, value: Any, ok: bool) -> None:
        with self._read_lock:
            self._reading.discard(name)
        if ok:
            self.post(LinkValue(name, value))
        self.post(LinkConnection(name, ok))

    # -- Channel Access (cothread, on the worker's main thread) -------------------------
    def _ca_subscribe(self) -> None:
        for name in self.ports:
            self._ca_monitor(name, as_bytes=False)

    def _ca_monitor(self, name: str, *, as_bytes: bool) -> None:
        """Subscribe to ``name``'s link in its own type (FORMAT_CTRL: an enum's choices); a
        string channel's as bytes (``datatype=bytes``): cothread decodes text as UTF-8 with
        U+FFFD for a byte that is not, and the bytes are what the link carries (``record_text``)."""
        from cothread.catools import FORMAT_CTRL, camonitor

        values = name in self.monitored and not self.paused
        events = DBE_VALUE | DBE_ALARM if values else DBE_PROPERTY  # the others: connection only
        self._ca_monitors[name] = camonitor(
            self.ports[name].link, lambda value: self._ca_update(name, values, as_bytes, value),
            events=events, format=FORMAT_CTRL, notify_disconnect=True, datatype=bytes if as_bytes else None)

    def _ca_update(self, name: str, values: bool, as_bytes: bool, value: Any) -> None:
        if not as_bytes and name in self._ca_strings:
            return  # the subscription a bytes one replaced: what it still delivered is not news
        if not value.ok:
            self.post(LinkConnection(name, False))
            return
        self.post(LinkConnection(name, True))
        if getattr(value, "datatype", None) == DBR_CHAR and getattr(value, "element_count", 1) > 1:
            self._ca_chars[name] = value.element_count  # a text written to it goes as its bytes
        if not as_bytes and getattr(value, "datatype", None) == DBR_STRING:
            self._ca_strings.add(name)  # its text again as bytes, from the new subscription's first value
            self._ca_monitors.pop(name).close()
            self._ca_monitor(name, as_bytes=True)
            return
        if values:
            self.post(LinkValue(name, plain(value)))

    def _ca_get(self, name: str) -> None:
        from cothread.catools import FORMAT_CTRL, caget

        value = caget(self.ports[name].link, timeout=self.timeout, throw=False, format=FORMAT_CTRL,
                      datatype=bytes if name in self._ca_strings else None)
        self._read_done(name, plain(value) if value.ok else None, bool(value.ok))

    def _ca_put(self, name: str, value: Any) -> None:
        from cothread.catools import caput

        if isinstance(value, str) and name in self._ca_strings:  # its bytes, as a record holds them
            value = fit_bytes(text_bytes(value), STRING_LENGTH)
        elif isinstance(value, str) and name in self._ca_chars:  # cothread would send a DBR_STRING, refused
            data = fit_bytes(text_bytes(value), self._ca_chars[name] - 1) + b"\0"  # NUL-ended, as a record holds it
            value = numpy.frombuffer(data, dtype=numpy.uint8)
        try:
            result = caput(self.ports[name].link, value, timeout=self.timeout, throw=False)
            if not result.ok:
                log.warning("write to %s (%s) failed: %s", self.ports[name].link, name, result)
            self.post(LinkConnection(name, bool(result.ok)))
        finally:
            self._writes.done(name)

    # -- PV Access (p4p, on its threads and a small pool) --------------------------------
    def _pva_monitor(self, name: str) -> None:
        """Subscribe to ``name``'s link; its values are passed on if it is monitored and not
        paused (PVA has no subscription to the connection alone: the others are dropped)."""
        values = name in self.monitored and not self.paused
        token = object()
        with self._pva_lock:
            if name in self._pva_current:
                self._pva_reopened.discard(self._pva_current[name])
                self._pva_reopened.add(token)
            self._pva_current[name] = token
        self._pva_monitors[name] = self._context.monitor(
            self.ports[name].link, lambda value: self._pva_update(name, token, values, value), notify_disconnect=True)

    def _pva_update(self, name: str, token: object, values: bool, value: Any) -> None:
        """One update of the subscription ``token`` (posted under the lock: once ``_pva_monitor``
        has replaced it, nothing of it reaches the queue). p4p opens every monitor with a
        Disconnected: of a monitor opened again (ENABLE), it is no news, the link being as it was."""
        update = value if isinstance(value, Exception) or not values else plain(value)
        with self._pva_lock:
            if self._pva_current.get(name) is not token:
                return
            if token in self._pva_reopened:
                self._pva_reopened.discard(token)
                if isinstance(value, Exception):
                    return
            if isinstance(value, Exception):
                self.post(LinkConnection(name, False))
                return
            self.post(LinkConnection(name, True))
            if values:
                self.post(LinkValue(name, update))

    def _pva_get(self, name: str) -> None:
        try:
            value = self._context.get(self.ports[name].link, timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - timeout, disconnect, remote error: the link is down
            log.debug("read of %s failed: %s", self.ports[name].link, exc)
            self._read_done(name, None, False)
            return
        self._read_done(name, plain(value), True)

    def _pva_put(self, name: str, value: Any) -> None:
        if isinstance(value, str):
            value = readable(value)  # PVA carries UTF-8 text: a byte that is not goes as U+FFFD
        try:
            self._context.put(self.ports[name].link, value, timeout=self.timeout)
            self.post(LinkConnection(name, True))
        except Exception as exc:  # noqa: BLE001
            log.warning("write to %s (%s) failed: %s", self.ports[name].link, name, exc)
            self.post(LinkConnection(name, False))
        finally:
            self._writes.done(name)
