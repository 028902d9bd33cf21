"""Messages between the supervisor and a worker: one JSON object per line.

Sans-I/O: this module turns messages into bytes and bytes into messages and never touches
a pipe, so the supervisor (asyncio) and the worker (threads) share one definition and the
protocol is unit-testable without processes.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Literal, Union

from pydantic import AfterValidator, BaseModel, Field, TypeAdapter

# How much of a plugin's own text the contract carries: the MESSAGE PV keeps 39 characters of
# it, the supervisor (REST record, /health) the whole text up to these bounds. The models cut
# it, so the worker never sends more and the supervisor never keeps more, whatever the peer.
MAX_MESSAGE_CHARS = 4000  # a MESSAGE, an exception's "Type: message"
MAX_TRACEBACK_CHARS = 16000  # the plugin's frames of a traceback (its end is kept: the raise)


def cut(text: str, limit: int, *, keep_end: bool = False) -> str:
    """``text`` within ``limit`` characters, saying how long it was when it is cut."""
    if len(text) <= limit:
        return text
    if keep_end:
        note = f"[{len(text)} characters, the first ones left out] ..."
        return note + text[len(text) - max(limit - len(note), 0):]
    note = f" ... [{len(text)} characters, the rest left out]"
    return text[:max(limit - len(note), 0)] + note


MessageText = Annotated[str, AfterValidator(lambda text: cut(text, MAX_MESSAGE_CHARS))]
TracebackText = Annotated[str, AfterValidator(lambda text: cut(text, MAX_TRACEBACK_CHARS, keep_end=True))]


class Message(BaseModel):
    """Base of every message; unknown fields are a protocol error."""

    model_config = {"extra": "forbid"}


# -- worker -> supervisor -----------------------------------------------------------
class Ready(Message):
    """Records exist and iocInit is done: the PVs are on the network."""

    type: Literal["ready"] = "ready"
    pid: int
    pvs: list[str]


class Heartbeat(Message):
    """Sent every heartbeat interval from a thread that is not the plugin thread.

    ``busy_for`` is how long the plugin's current call (``busy_in``) has been running,
    which is what lets the supervisor see a plugin stuck in a loop.
    """

    type: Literal["heartbeat"] = "heartbeat"
    busy_in: str | None = None
    busy_for: float | None = None
    cycles: int = 0


class StatusChanged(Message):
    """The STATUS and MESSAGE PVs changed; ``message`` is the whole text written to MESSAGE
    (the record holds its first 39 characters)."""

    type: Literal["status"] = "status"
    status: str = Field(max_length=40)
    message: MessageText = ""


class Log(Message):
    type: Literal["log"] = "log"
    level: str
    logger: str
    message: str


class Initialized(Message):
    """``initialize()`` returned (``ok``): the plugin runs. Or it raised: ``exception`` and
    ``message`` say what (type name, ``str()``), ``traceback`` shows the plugin's own frames,
    and the worker runs ``cleanup()`` and exits (``WorkerExit.INIT_FAILED``)."""

    type: Literal["initialized"] = "initialized"
    ok: bool = True
    exception: Annotated[str, AfterValidator(lambda name: cut(name, 200))] = ""
    message: MessageText = ""
    traceback: TracebackText = ""


class RunAccepted(Message):
    """The worker admitted a run (a REST ``RunJob`` or an operator's RUN=1) and will run it.

    The worker alone decides admission, under one lock, and sends its answer from inside
    it: so the supervisor sees accepts, rejects and finishes in the order they happened.
    """

    type: Literal["run_accepted"] = "run_accepted"
    run_id: str
    origin: Literal["api", "epics"] = "api"


class RunFinished(Message):
    type: Literal["run_finished"] = "run_finished"
    run_id: str
    outcome: Literal["succeeded", "failed", "cancelled"]
    result: dict[str, Any]


class RunRejected(Message):
    """The answer to a ``RunJob`` the worker did not admit (a run is active, or it is stopping)."""

    type: Literal["run_rejected"] = "run_rejected"
    run_id: str
    active_run_id: str


class Fatal(Message):
    """The worker cannot go on (import failed, records could not be built, ...)."""

    type: Literal["fatal"] = "fatal"
    message: str
    traceback: str = ""


class ControlRequest(Message):
    """An operator wrote a plugin name to ``{PREFIX}:IOCHOST:START``, ``:STOP`` or ``:RESTART``.

    Only the daemon's own worker serves those PVs; the supervisor takes this message from
    that worker alone (from a plugin's worker it is logged and dropped) and answers through
    the CONTROL_MSG PV with ``set_pvs``.
    """

    type: Literal["control"] = "control"
    action: Literal["start", "stop", "restart"]
    plugin: str = Field(max_length=100)


# -- supervisor -> worker -----------------------------------------------------------
class RunJob(Message):
    type: Literal["run"] = "run"
    run_id: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class CancelRun(Message):
    type: Literal["cancel"] = "cancel"
    run_id: str


class Stop(Message):
    """Call ``cleanup()`` and exit; the worker gives cleanup ``grace`` seconds."""

    type: Literal["stop"] = "stop"
    grace: float | None = None


class SetPVs(Message):
    """Write values to the worker's PVs (used by the daemon's own status IOC)."""

    type: Literal["set_pvs"] = "set_pvs"
    values: dict[str, Any]


WorkerEvent = Annotated[
    Union[Ready, Initialized, Heartbeat, StatusChanged, Log, RunAccepted, RunFinished, RunRejected, Fatal,
          ControlRequest],
    Field(discriminator="type"),
]
SupervisorCommand = Annotated[
    Union[RunJob, CancelRun, Stop, SetPVs], Field(discriminator="type")
]

_EVENTS: TypeAdapter[Any] = TypeAdapter(WorkerEvent)
_COMMANDS: TypeAdapter[Any] = TypeAdapter(SupervisorCommand)

# A line longer than this is a protocol violation, not a message (job results included).
MAX_LINE = 4 * 1024 * 1024


def encode(message: Message) -> bytes:
    return message.model_dump_json().encode() + b"\n"


class LineDecoder:
    """Accumulate bytes and return the complete messages they contain.

    A line that is not a valid message, or that grows past MAX_LINE, is handed to
    ``on_error`` and skipped (an over-long line up to its end); the lines around it still
    decode. The peer may be a hostile plugin: nothing it sends can raise out of ``feed``
    or make the buffer grow past MAX_LINE.
    """

    def __init__(self, adapter: TypeAdapter[Any], on_error: Callable[[str], None] | None = None) -> None:
        self._adapter = adapter
        self._buffer = bytearray()
        self._discarding = False  # inside an over-long line: drop up to its newline
        self._on_error = on_error or (lambda _message: None)

    def feed(self, data: bytes) -> list[Any]:
        self._buffer.extend(data)
        messages = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._discarding:
                self._discarding = False
                continue
            if not line.strip():
                continue
            try:
                messages.append(self._adapter.validate_json(line))
            except ValueError as exc:
                self._on_error(f"malformed message dropped: {str(exc)[:300]}")
        if len(self._buffer) > MAX_LINE:
            self._buffer.clear()
            if not self._discarding:
                self._on_error(f"message line over {MAX_LINE} bytes dropped")
            self._discarding = True
        return messages


def event_decoder(on_error: Callable[[str], None] | None = None) -> LineDecoder:
    return LineDecoder(_EVENTS, on_error)


def command_decoder(on_error: Callable[[str], None] | None = None) -> LineDecoder:
    return LineDecoder(_COMMANDS, on_error)
