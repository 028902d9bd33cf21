"""What goes into a plugin's lifecycle (events) and what comes out (effects).

Plain frozen data, no behaviour: the lifecycle (``lifecycle.py``) turns events into
effects, the shell (``shell.py``) turns effects into processes, timers and files and
feeds back what happened as events. Events that concern one worker carry its ``gen``
(the spawn counter), so a late message from a worker that has since been replaced is
recognised and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from iochost.config.limits import WorkerLimits
from iochost.contract.messages import Message
from iochost.errors import ErrorCode, IochostError
from iochost.store import RegistryEntry
from iochost.supervisor.models import RunRecord, Transition


@dataclass(frozen=True)
class Timings:
    """The daemon's timing settings the lifecycle decides with (seconds)."""

    start_timeout: float = 60.0
    heartbeat_timeout: float = 15.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    backoff_reset: float = 60.0
    cancel_grace: float = 5.0
    stop_margin: float = 2.0  # after the grace period, before SIGKILL: the worker exits by itself
    probation: float = 3.0  # an upgraded worker must run this long after initialize() to be kept


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
    limits: WorkerLimits


@dataclass(frozen=True)
class SpawnFailed:
    gen: int
    reason: str
    host_fault: ErrorCode | None = None  # the host ran out of fds, processes, memory or disk: retried like a crash
    now: float = 0.0  # monotonic, for the backoff of a retried one


@dataclass(frozen=True)
class FromWorker:
    gen: int
    message: Message
    now: float  # monotonic


@dataclass(frozen=True)
class WorkerExited:
    gen: int
    code: int
    now: float
    log_tail: list[str] = field(default_factory=list)


# -- events: time ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Tick:
    now: float


@dataclass(frozen=True)
class RestartDue:
    gen: int


@dataclass(frozen=True)
class StartOverdue:
    gen: int
    now: float = 0.0


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
    gen: int


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
    Persist, Teardown, Forget, Later, Transitioned, StatusUpdate, RunUpdate, UpgradeUpdate, RunAnswer,
]
