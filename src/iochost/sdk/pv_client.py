"""Get, put and monitor any PV over Channel Access or PV Access, from any thread.

iocmng's ``pv_client`` API (``init``, ``get_provider``, ``get``, ``put``, ``monitor``,
``unmonitor``, ``unmonitor_all``, ``active_monitors``, ``close``), so plugins written for it
run unchanged: ``from iocmng import pv_client`` and ``from iochost import pv_client`` give
this module. One provider is shared by the whole process: in a worker it follows the
plugin's ``pva`` parameter (true by default: PV Access); elsewhere call ``init(pva=...)``.

- PV Access goes through one lazily created ``p4p.client.thread.Context``.
- Channel Access goes through cothread.catools, which must be called on cothread's thread:
  in a worker that is the main thread (serving the IOC), and calls from plugin threads are
  handed to it; in a process where nothing has imported cothread yet, the first CA call
  starts a daemon thread that owns cothread. (A process that imported cothread itself must
  keep its cothread thread serving callbacks, or CA calls time out.)

Values come back as plain Python values: a number as ``int`` or ``float`` (not p4p's
``ntfloat`` / cothread's ``ca_float``), text as ``str``, an enum as its index (``int``),
an array (waveform) as a ``list``, a PVA structure no NT type describes as a ``dict``.
A call never blocks longer than its ``timeout``: no answer in time raises ``TimeoutError``
naming the PV; a PV that answers with a refusal raises ``PVError``. Importing this module
imports neither cothread nor p4p: each is loaded on the first call that needs it.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from iochost.alarms import STATUSES

log = logging.getLogger("iochost.pv_client")

DEFAULT_PVA = True  # iocmng's default provider; a plugin's ``pva`` parameter defaults to it too
DEFAULT_TIMEOUT = 5.0  # seconds, iocmng's default for get and put

__all__ = ["PVError", "PVUpdate", "init", "get_provider", "get", "put", "monitor", "unmonitor", "unmonitor_all",
           "active_monitors", "close"]


class PVError(RuntimeError):
    """A PV answered but refused the request (no write access, a value it cannot take, ...)."""


@dataclass(frozen=True)
class PVUpdate:
    """What ``monitor(..., metadata=True)`` hands its callback: the plain value and, as the
    server sent them, its alarm and time. ``severity``: 0 NO_ALARM, 1 MINOR, 2 MAJOR,
    3 INVALID. ``status`` is the provider's own number (CA: EPICS's alarm status, 3 for
    HIHI; PVA: the kind of alarm, 1 for a record's), so ``message`` says the same over both:
    the alarm's text (``"HIHI"``), empty without alarm. ``timestamp``: seconds since 1970.
    Each is None when the server gave none (a PVA structure without ``alarm`` or ``timeStamp``)."""

    value: Any
    severity: int | None = None
    status: int | None = None
    message: str | None = None
    timestamp: float | None = None


Provider = Literal["pva", "ca"]  # PV Access or Channel Access


def _provider_name(pva: bool) -> Provider:
    return "pva" if pva else "ca"


_lock = threading.RLock()
_provider: Provider = _provider_name(DEFAULT_PVA)
_context: Any = None  # p4p.client.thread.Context, created on first PVA use


@dataclass
class _Monitor:
    """One subscription: what ``active_monitors`` reports and what ``unmonitor`` closes."""

    pv_name: str
    provider: str
    handle: Any = None  # cothread Subscription or p4p Subscription
    closed: threading.Event = field(default_factory=threading.Event)


_monitors: dict[str, _Monitor] = {}


def init(pva: bool = DEFAULT_PVA) -> None:
    """Choose the provider later calls use: PV Access if ``pva``, else Channel Access.
    Monitors already started keep their provider."""
    global _provider
    with _lock:
        _provider = _provider_name(bool(pva))
    log.debug("PV client provider: %s", _provider)


def get_provider() -> Provider:
    """The provider in use: ``"pva"`` or ``"ca"``."""
    return _provider


def get(pv_name: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """The current value of ``pv_name`` as a plain Python value (see the module's doc)."""
    _check_name(pv_name)
    if _provider == "ca":
        return _plain(_on_cothread(_ca_get, pv_name, timeout, what=f"get {pv_name!r} over CA", timeout=timeout))
    try:
        value = _pva_context().get(pv_name, timeout=timeout)
    except TimeoutError as exc:
        raise TimeoutError(f"get {pv_name!r} over PVA: no answer within {timeout} s") from exc
    except Exception as exc:
        raise PVError(f"get {pv_name!r} over PVA failed: {type(exc).__name__}: {exc}") from exc
    return _plain(value)


def put(pv_name: str, value: Any, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Write ``value`` to ``pv_name``. Over PVA the call returns once the server accepted
    it; over CA once it is sent (without waiting for the record's processing to complete,
    as iocmng does: a motor's move is not waited for)."""
    _check_name(pv_name)
    if _provider == "ca":
        _on_cothread(_ca_put, pv_name, value, timeout, what=f"put {pv_name!r} over CA", timeout=timeout)
        return
    try:
        _pva_context().put(pv_name, value, timeout=timeout)
    except TimeoutError as exc:
        raise TimeoutError(f"put {pv_name!r} over PVA: no answer within {timeout} s") from exc
    except Exception as exc:
        raise PVError(f"put {value!r} to {pv_name!r} over PVA failed: {type(exc).__name__}: {exc}") from exc


def monitor(
    pv_name: str,
    callback: Callable[[Any], None],
    name: str | None = None,
    conn_callback: Callable[[bool], None] | None = None,
    *,
    metadata: bool = False,
) -> str:
    """Call ``callback(value)`` with each new value of ``pv_name`` (plain Python) until
    ``unmonitor(key)``; returns the key: ``name``, or ``pv_name`` if not given. A monitor
    started under a key in use replaces it. ``conn_callback(True/False)`` if given is told
    when the PV connects and disconnects. Callbacks run on a client thread, never on
    the thread serving the IOC: a callback that takes long delays only later updates.
    ``metadata`` (an iochost addition; iocmng's callers never pass it): the callback gets a
    ``PVUpdate``, the value with its alarm severity, status and timestamp."""
    _check_name(pv_name)
    if not callable(callback):
        raise TypeError(f"monitor {pv_name!r}: callback must be callable, got {callback!r}")
    key = name or pv_name
    entry = _Monitor(pv_name, _provider)
    deliver = _deliverer(entry, callback, conn_callback, metadata)
    if entry.provider == "ca":
        entry.handle = _on_cothread(_ca_monitor, pv_name, deliver, metadata, what=f"monitor {pv_name!r} over CA",
                                    timeout=DEFAULT_TIMEOUT)
    else:
        entry.handle = _pva_context().monitor(pv_name, deliver, notify_disconnect=True)
    with _lock:
        old = _monitors.pop(key, None)
        _monitors[key] = entry
    if old is not None:
        _close(old)
    log.debug("monitor %s over %s as %r", pv_name, entry.provider, key)
    return key


def unmonitor(key: str) -> bool:
    """Stop the monitor ``key``; False if there is none. No update arriving after this reaches its callback."""
    with _lock:
        entry = _monitors.pop(key, None)
    if entry is None:
        return False
    _close(entry)
    return True


def unmonitor_all() -> int:
    """Stop every monitor; returns how many there were."""
    with _lock:
        entries = list(_monitors.values())
        _monitors.clear()
    for entry in entries:
        _close(entry)
    return len(entries)


def active_monitors() -> dict[str, str]:
    """``{key: pv_name}`` of the running monitors."""
    with _lock:
        return {key: entry.pv_name for key, entry in _monitors.items()}


def close() -> None:
    """Stop every monitor and close the PVA context (a later call opens a new one)."""
    global _context
    unmonitor_all()
    with _lock:
        context, _context = _context, None
    if context is not None:
        context.close()


# -- values --------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """cothread's ca_* and p4p's nt* values (subclasses of int/float/str, numpy arrays) as
    the plain Python values users compare, print and serialise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)  # not str(): p4p's ntstr prints its timestamp
    if isinstance(value, bytes):
        return bytes(value)
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return tolist()
    todict = getattr(value, "todict", None)  # a p4p Value of a structure no NT type unwraps
    if callable(todict):
        return todict()
    return value


def _with_metadata(value: Any) -> PVUpdate:
    """``value`` (cothread's FORMAT_TIME value, p4p's nt* value or a p4p ``Value``) as a
    ``PVUpdate``: both libraries hang ``severity``, ``status`` and ``timestamp`` on it."""
    severity, status, timestamp = (getattr(value, name, None) for name in ("severity", "status", "timestamp"))
    raw = getattr(value, "raw", None)  # p4p: the Value an nt* value came from
    if raw is None and callable(getattr(value, "todict", None)):  # a p4p Value no NT type unwraps
        raw = value
        severity, status = value.get("alarm.severity", None), value.get("alarm.status", None)
        seconds, nanoseconds = value.get("timeStamp.secondsPastEpoch", None), value.get("timeStamp.nanoseconds", 0)
        timestamp = None if seconds is None else seconds + nanoseconds * 1e-9
    if raw is not None:
        message = raw.get("alarm.message", None)
    elif status is not None:  # CA: the status is EPICS's menuAlarmStat
        message = STATUSES[status] if 0 < status < len(STATUSES) else "" if status == 0 else str(status)
    else:
        message = None
    return PVUpdate(_plain(value), None if severity is None else int(severity), None if status is None else int(status),
                    None if message is None else str(message), None if timestamp is None else float(timestamp))


def _check_name(pv_name: Any) -> None:
    if not isinstance(pv_name, str) or not pv_name.strip():
        raise ValueError(f"a PV name must be a non-empty string, got {pv_name!r}")


def _deliverer(entry: _Monitor, callback: Callable[[Any], None],
               conn_callback: Callable[[bool], None] | None, metadata: bool) -> Callable[[Any], None]:
    """The function the provider calls with each update (a value or a disconnection), which
    hands the update to the user's callbacks; for CA through a thread of ours."""
    connected = [False]

    def deliver(update: Any) -> None:
        if entry.closed.is_set():
            return
        if isinstance(update, Exception):  # p4p's Disconnected / cothread's ca_nothing
            if connected[0]:
                connected[0] = False
                if conn_callback is not None:
                    conn_callback(False)
            return
        if not connected[0]:
            connected[0] = True
            if conn_callback is not None:
                conn_callback(True)
        callback(_with_metadata(update) if metadata else _plain(update))

    def guarded(update: Any) -> None:
        try:
            deliver(update)
        except Exception:
            log.exception("monitor callback for %s raised", entry.pv_name)

    if entry.provider == "pva":
        return guarded  # p4p calls it on its own worker threads
    return lambda update: _ca_updates().put((guarded, update))


# -- PV Access ------------------------------------------------------------------------------
def _pva_context() -> Any:
    global _context
    with _lock:
        if _context is None:
            from p4p.client.thread import Context

            _context = Context("pva")
        return _context


# -- Channel Access on cothread's thread ---------------------------------------------------
_cothread_started = threading.Event()
_updates: queue.SimpleQueue[tuple[Callable[[Any], None], Any]] | None = None


def _ensure_cothread() -> Any:
    """The cothread module, with a thread serving it: the process's own if it imported
    cothread (a worker's main thread), else a daemon thread started here."""
    with _lock:
        if "cothread" not in sys.modules and not _cothread_started.is_set():
            failure: list[BaseException] = []

            def serve() -> None:
                try:
                    import cothread
                except BaseException as exc:  # noqa: BLE001 - reported to the caller below
                    failure.append(exc)
                    _cothread_started.set()
                    return
                _cothread_started.set()
                cothread.Event().Wait()  # serves cothread's callbacks for the life of the process

            threading.Thread(target=serve, name="iochost-pv-client-ca", daemon=True).start()
            _cothread_started.wait()
            if failure:
                raise failure[0]
    import cothread

    return cothread


def _on_cothread(action: Callable[..., Any], *args: Any, what: str, timeout: float) -> Any:
    """``action(*args)`` run on cothread's thread; its result, or its exception as ours."""
    cothread = _ensure_cothread()
    from_cothread = cothread.cothread.scheduler_thread_id == threading.get_ident()
    try:
        if from_cothread:
            return action(*args)
        return cothread.CallbackResult(action, *args, callback_timeout=timeout)
    except cothread.Timedout as exc:
        raise TimeoutError(f"{what}: no answer within {timeout} s") from exc
    except Exception as exc:
        # catools is only ever imported on cothread's thread (it creates its CA context there)
        catools, cadef = sys.modules.get("cothread.catools"), sys.modules.get("cothread.cadef")
        if catools is not None and cadef is not None and isinstance(exc, catools.ca_nothing):
            if exc.errorcode == cadef.ECA_TIMEOUT:
                raise TimeoutError(f"{what}: no answer within {timeout} s") from exc
            raise PVError(f"{what} failed: {exc}") from exc
        raise


def _ca_get(pv_name: str, timeout: float) -> Any:
    from cothread.catools import caget

    return caget(pv_name, timeout=timeout)


def _ca_put(pv_name: str, value: Any, timeout: float) -> None:
    from cothread.catools import caput

    caput(pv_name, value, wait=False, timeout=timeout)


def _ca_monitor(pv_name: str, deliver: Callable[[Any], None], metadata: bool) -> Any:
    from cothread.catools import FORMAT_RAW, FORMAT_TIME, camonitor

    return camonitor(pv_name, deliver, notify_disconnect=True, format=FORMAT_TIME if metadata else FORMAT_RAW)


def _ca_updates() -> queue.SimpleQueue[tuple[Callable[[Any], None], Any]]:
    """The queue from cothread's thread to the thread that runs CA monitor callbacks."""
    global _updates
    with _lock:
        if _updates is None:
            _updates = queue.SimpleQueue()

            def run(updates: queue.SimpleQueue[tuple[Callable[[Any], None], Any]]) -> None:
                while True:
                    deliver, update = updates.get()
                    deliver(update)

            threading.Thread(target=run, args=(_updates,), name="iochost-pv-client-monitors", daemon=True).start()
        return _updates


def _close(entry: _Monitor) -> None:
    entry.closed.set()  # updates already queued are dropped
    if entry.handle is None:
        return
    try:
        if entry.provider == "ca":
            _on_cothread(entry.handle.close, what=f"unmonitor {entry.pv_name!r}", timeout=DEFAULT_TIMEOUT)
        else:
            entry.handle.close()
    except Exception:
        log.exception("closing the monitor of %s", entry.pv_name)
