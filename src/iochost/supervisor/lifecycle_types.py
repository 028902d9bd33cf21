"""What goes into a plugin's lifecycle (events) and what comes out (effects).

Plain frozen data, no behaviour: the lifecycle (``lifecycle.py``) turns events into
effects, the shell (``shell.py``) turns effects into processes, timers and files and
feeds back what happened as events. Events that concern one worker carry its ``gen``
(the spawn counter), so a late message from a worker that has since been replaced is
recognised and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from iochost.config.limits import WorkerLimits
from iochost.config.parameters import Parameters
from iochost.contract.messages import Message
from iochost.errors import ErrorCode, IochostError
from iochost.store import RegistryEntry
from iochost.supervisor.public import RunRecord, Transition

if TYPE_CHECKING:
    from iochost.settings import Settings

# After the grace period, before SIGKILL: the worker exits by itself. Not a setting.
STOP_MARGIN = 2.0


@dataclass(frozen=True)
class Timings:
    """The daemon's timing settings the lifecycle decides with (seconds). No defaults here:
    ``Settings`` holds them, and ``from_settings`` is the one place they are copied from."""

    start_timeout: float
    heartbeat_timeout: float
    backoff_initial: float
    backoff_max: float
    backoff_reset: float
    cancel_grace: float
    probation: float  # an upgraded worker must run this long after initialize() to be kept
    stop_margin: float  # after the grace period, before SIGKILL

    @classmethod
    def from_settings(cls, settings: Settings) -> Timings:
        return cls(start_timeout=settings.start_timeout, heartbeat_timeout=settings.heartbeat_timeout,
                   backoff_initial=settings.backoff_initial, backoff_max=settings.backoff_max,
                   backoff_reset=settings.backoff_reset, cancel_grace=settings.cancel_grace,
                   probation=settings.upgrade_probation, stop_margin=STOP_MARGIN)


@dataclass(frozen=True)
class Now:
    """When an event is handled, read once by the shell (``Shell.feed``): the lifecycle never
    reads a clock, so its tests set the time. ``wall`` (UTC) for what clients read,
    ``mono`` (monotonic seconds) for intervals: uptime, heartbeat silence, busy time."""

    wall: datetime
    mono: float


# -- events: requests (from the API) ----------------------------------------------------
@dataclass(frozen=True)
class AddRequested:
    pass


@dataclass(frozen=True)
class RestoreRequested:
    pass


@dataclass(frozen=True)
class StartRequested:
    pass


@dataclass(frozen=True)
class StopRequested:
    keep_desired: bool = False  # True: the daemon stops it (shutdown), the operator did not


@dataclass(frozen=True)
class RestartRequested:
    pass


@dataclass(frozen=True)
class DeleteRequested:
    pass


@dataclass(frozen=True)
class RunRequested:
    run_id: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class CancelRequested:
    run_id: str


@dataclass(frozen=True)
class UpgradeRequested:
    """Bring in a new revision while the current one keeps serving (what: the shell's
    ``PluginSlot.upgrade_request``)."""


@dataclass(frozen=True)
class Closing:
    """The daemon is shutting down: no exit is a crash any more, nothing restarts."""


# -- events: progress of the shell's work --------------------------------------------
@dataclass(frozen=True)
class Fetched:
    commit: str | None


@dataclass(frozen=True)
class Prepared:
    """Fetched and valid: what the registry keeps and the worker needs."""

    entry: RegistryEntry
    plugin_dir: Path
    pvs: list[str]
    pv_prefix: str | None = None  # PREFIX:SEGMENT, the segment from its config.yaml's prefix: or its name
    parameters: Parameters | None = None  # config.yaml's, the entry's overrides merged: its workers' limits


@dataclass(frozen=True)
class PrepareFailed:
    error: IochostError


@dataclass(frozen=True)
class UpgradePrepared:
    """The new revision is staged and valid; None: the same commit and parameters (a no-op,
    or, with ``entry``, the same revision from another source, e.g. a mirror: only the
    registry entry changes, the worker keeps running)."""

    prepared: Prepared | None
    entry: RegistryEntry | None = None


@dataclass(frozen=True)
class UpgradePrepareFailed:
    error: IochostError


@dataclass(frozen=True)
class Swapped:
    """``SwapRevision`` is done (``ok``: the plugin directory in place) or could not be (``reason``)."""

    ok: bool
    plugin_dir: Path | None = None
    reason: str = ""


@dataclass(frozen=True)
class Dropped:
    """``DropStaged`` is done."""


@dataclass(frozen=True)
class Restored:
    plugin_dir: Path
    pv_prefix: str | None = None  # from the checkout's config.yaml; None: it does not load (the worker says why)
    parameters: Parameters | None = None  # as ``Prepared.parameters``; None: config.yaml's were not read


@dataclass(frozen=True)
class RestoreFailed:
    reason: str


@dataclass(frozen=True)
class TornDown:
    """Registry entry, checkout, environment, logs and PV names are gone."""


# -- events: the worker ------------------------------------------------------------------
@dataclass(frozen=True)
class Spawned:
    gen: int
    pid: int


@dataclass(frozen=True)
class SpawnFailed:
    gen: int
    reason: str
    host_fault: ErrorCode | None = None  # the host ran out of fds, processes, memory or disk: retried like a crash


@dataclass(frozen=True)
class FromWorker:
    gen: int
    message: Message


@dataclass(frozen=True)
class WorkerExited:
    gen: int
    code: int
    log_tail: list[str] = field(default_factory=list)


# -- events: time ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Tick:
    """The watchdog's period: a plugin call busy too long, or a worker gone silent, is killed."""


@dataclass(frozen=True)
class RestartDue:
    gen: int


@dataclass(frozen=True)
class StartOverdue:
    gen: int


@dataclass(frozen=True)
class StopOverdue:
    gen: int


@dataclass(frozen=True)
class CancelOverdue:
    gen: int
    run_id: str


@dataclass(frozen=True)
class ProbationOver:
    """An upgraded worker has run for the probation period: the upgrade is kept."""

    gen: int


Event = Union[
    AddRequested, RestoreRequested, StartRequested, StopRequested, RestartRequested, DeleteRequested,
    RunRequested, CancelRequested, UpgradeRequested, Closing, Fetched, Prepared, PrepareFailed,
    UpgradePrepared, UpgradePrepareFailed, Swapped, Dropped, Restored, RestoreFailed, TornDown, Spawned, SpawnFailed,
    FromWorker, WorkerExited, Tick, RestartDue, StartOverdue, StopOverdue, CancelOverdue, ProbationOver,
]
REQUESTS = (AddRequested, RestoreRequested, StartRequested, StopRequested, RestartRequested, DeleteRequested,
            RunRequested, CancelRequested, UpgradeRequested)


# -- effects ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prepare:
    """Fetch, install requirements, validate; answer Fetched, then Prepared or PrepareFailed."""


@dataclass(frozen=True)
class Restore:
    """Bring back the registered checkout, offline; answer Restored or RestoreFailed."""


@dataclass(frozen=True)
class PrepareUpgrade:
    """Stage, install and validate the new revision beside the running one; answer
    UpgradePrepared or UpgradePrepareFailed."""


@dataclass(frozen=True)
class SwapRevision:
    """With no worker running: put the staged revision in place (or, ``back``, the
    previous one again); answer Swapped."""

    back: bool = False


@dataclass(frozen=True)
class DropStaged:
    """Forget what an upgrade staged or kept aside (to commit it, or after a late answer);
    answer Dropped."""


@dataclass(frozen=True)
class Spawn:
    """Start a worker under ``limits`` (resolved by the lifecycle; its stop is timed by them
    too); answer Spawned or SpawnFailed, then WorkerExited."""

    gen: int
    limits: WorkerLimits


@dataclass(frozen=True)
class Send:
    gen: int
    message: Message


@dataclass(frozen=True)
class StopWorker:
    """Send Stop(grace), then SIGTERM: the worker calls cleanup() and exits within ``grace``."""

    gen: int
    grace: float


@dataclass(frozen=True)
class Kill:
    gen: int
    reason: str


@dataclass(frozen=True)
class Online:
    pvs: list[str]


@dataclass(frozen=True)
class Offline:
    pass


@dataclass(frozen=True)
class Persist:
    entry: RegistryEntry


@dataclass(frozen=True)
class EndErrands:
    """End the processes the plugin's add or upgrade waits on (git, pip, the validation
    probe): a delete has made them pointless, and it is not to wait them out."""


@dataclass(frozen=True)
class Teardown:
    pass


@dataclass(frozen=True)
class Forget:
    pass


@dataclass(frozen=True)
class Later:
    delay: float
    event: Event


@dataclass(frozen=True)
class Transitioned:
    transition: Transition


@dataclass(frozen=True)
class StatusUpdate:
    status: str
    message: str
    trouble_changed: bool = False  # the plugin's ``trouble`` came or went with it: /health changed


@dataclass(frozen=True)
class RunUpdate:
    run: RunRecord


@dataclass(frozen=True)
class UpgradeUpdate:
    """A step of an upgrade, for the event stream."""

    phase: str  # started, validated, unchanged, succeeded, rolled_back, failed
    from_commit: str | None
    to_commit: str | None
    reason: str = ""


@dataclass(frozen=True)
class RunAnswer:
    """The worker's answer to a REST run request: the record, or why not."""

    run_id: str
    run: RunRecord | None = None
    error: IochostError | None = None


Effect = Union[
    Prepare, Restore, PrepareUpgrade, SwapRevision, DropStaged, Spawn, Send, StopWorker, Kill, Online, Offline,
    Persist, EndErrands, Teardown, Forget, Later, Transitioned, StatusUpdate, RunUpdate, UpgradeUpdate, RunAnswer,
]
