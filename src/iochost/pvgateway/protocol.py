"""Messages between the daemon and its PV gateway child: one JSON object per line.

Sans-I/O, like ``iochost.contract.messages`` (whose ``Message``, ``encode`` and
``LineDecoder`` these reuse): the daemon writes requests to the child's stdin, the child
writes answers and monitor updates to its stdout. Every request carries an ``id`` its one
``answer`` repeats; updates name the monitor's ``key``. Values on the wire are already
JSON-safe (``values.json_safe``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, Field, TypeAdapter

from iochost.contract.messages import MAX_LINE, LineDecoder, Message, encode

__all__ = ["encode", "request_decoder", "reply_decoder", "GetPV", "PutPV", "StartMonitor", "StopMonitor", "Ping",
           "Hello", "Answer", "Update", "PVName", "Timeout", "MAX_TIMEOUT", "MAX_REPLY_BYTES",
           "MAX_REQUEST_BYTES"]

MAX_PV_NAME = 256  # characters: more than any EPICS name (PVA's included) in use
MAX_TIMEOUT = 60.0  # seconds a get or put may wait: the API's answer must come within it
MAX_REPLY_BYTES = 1024 * 1024  # an answer or update line; a bigger value is refused, named
MAX_REQUEST_BYTES = MAX_LINE  # a request line: the child's decoder drops a longer one unanswered


def _pv_name(name: str) -> str:
    if any(c.isspace() or not c.isprintable() for c in name):
        raise ValueError(f"{name!r} is not a PV name: no spaces or control characters")
    return name


PVName = Annotated[str, Field(min_length=1, max_length=MAX_PV_NAME), AfterValidator(_pv_name)]
Timeout = Annotated[float, Field(gt=0, le=MAX_TIMEOUT)]


# -- daemon -> child ----------------------------------------------------------------------------
class GetPV(Message):
    type: Literal["get"] = "get"
    id: int
    pv_name: PVName
    timeout: Timeout


class PutPV(Message):
    type: Literal["put"] = "put"
    id: int
    pv_name: PVName
    value: Any
    timeout: Timeout


class StartMonitor(Message):
    """Subscribe to ``pv_name`` under ``key`` (a key in use is replaced, as pv_client does)."""

    type: Literal["monitor"] = "monitor"
    id: int
    key: PVName
    pv_name: PVName


class StopMonitor(Message):
    type: Literal["unmonitor"] = "unmonitor"
    id: int
    key: PVName


class Ping(Message):
    """Answered at once: the child still reads and writes (asked while monitors exist,
    whose silence alone would not tell a stopped or stuck child from a quiet PV)."""

    type: Literal["ping"] = "ping"
    id: int


# -- child -> daemon ----------------------------------------------------------------------------
class Hello(Message):
    """The child is up and takes requests."""

    type: Literal["hello"] = "hello"
    pid: int
    provider: Literal["pva", "ca"]


class Answer(Message):
    """The outcome of request ``id``: ``value`` for a get, ``error`` (the exception's type
    and text) when it failed."""

    type: Literal["answer"] = "answer"
    id: int
    ok: bool
    value: Any = None
    error: str | None = None


class Update(Message):
    """A monitored PV's new value, or (``connected`` false) that it disconnected; with the
    value, its alarm ``severity`` (0 NO_ALARM .. 3 INVALID) and ``alarm`` (its text, as
    ``"HIHI"``; empty without alarm) and its ``timestamp`` (seconds since 1970, the
    server's); each null when the server sent none."""

    type: Literal["update"] = "update"
    key: str
    value: Any = None
    connected: bool = True
    severity: int | None = None
    alarm: str | None = None
    timestamp: float | None = None
    error: str | None = None


Request = Annotated[Union[GetPV, PutPV, StartMonitor, StopMonitor, Ping], Field(discriminator="type")]
Reply = Annotated[Union[Hello, Answer, Update], Field(discriminator="type")]
_REQUESTS: TypeAdapter[Any] = TypeAdapter(Request)
_REPLIES: TypeAdapter[Any] = TypeAdapter(Reply)


def request_decoder(on_error: Any = None) -> LineDecoder:
    return LineDecoder(_REQUESTS, on_error)


def reply_decoder(on_error: Any = None) -> LineDecoder:
    return LineDecoder(_REPLIES, on_error)
