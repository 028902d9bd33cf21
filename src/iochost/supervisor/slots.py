"""What the shell keeps per plugin (``PluginSlot``), the services it works with, and the
face it shows its own work modules (``ShellPort``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from iochost.contract import messages
from iochost.errors import IochostError
from iochost.launch.launcher import Launcher
from iochost.settings import Settings
from iochost.store import GitStore, Registry, RegistryEntry
from iochost.store.envs import PluginEnvs
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.adding import AddRequest
from iochost.supervisor.containment import Containment
from iochost.supervisor.epics import EpicsNetwork
from iochost.supervisor.lifecycle import PluginLifecycle
from iochost.supervisor.log_feed import LogFeed
from iochost.supervisor.process import WorkerProcess
from iochost.supervisor.public import RunRecord


@dataclass
class Services:
    """What the shell works with, made once by ``Supervisor.start``."""

    store: GitStore
    registry: Registry
    envs: PluginEnvs
    containment: Containment
    epics: EpicsNetwork
    launcher: Launcher | None  # the fork server; None: every worker and probe is spawned
    forward_log: Callable[[str, messages.Log], None]
    on_control: Callable[[PluginSlot, messages.ControlRequest], None] | None = None  # whose worker sent it
    on_storage: Callable[[], None] | None = None  # the data dir began or stopped refusing writes
    # PLUGIN_EXISTS naming the other plugin whose PVs a plugin's PV prefix would share, or None
    pv_clash: Callable[[str, str], IochostError | None] | None = None
    # each plugin's log writes, to whoever follows them (None: nobody can)
    log_feed: LogFeed | None = None


class PluginSlot:
    """One lifecycle and the live things the shell holds for it."""

    def __init__(self, lifecycle: PluginLifecycle, request: AddRequest | None = None) -> None:
        self.lc = lifecycle
        self.request = request  # the add being carried out, until it ends
        self.upgrade_request: AddRequest | None = None  # the upgrade being carried out, until it ends
        self.upgrade_op: str | None = None  # the id of the lifecycle's latest upgrade: its staging areas' name
        self.worker: WorkerProcess | None = None
        self.worker_gen = 0
        self.run_answers: dict[str, asyncio.Future[RunRecord]] = {}
        self.run_done: dict[str, asyncio.Future[RunRecord]] = {}
        self.io: asyncio.Lock = asyncio.Lock()  # registry and file work of this plugin, in order
        self.unsaved: RegistryEntry | None = None  # a Persist the disk refused: saved again once it has room
        # the daemon's start: its restore claims its PV names once the plugin before it in boot
        # order has (``claim_after``), then says it has (``claimed``); the checkouts run side by side
        self.claim_after: asyncio.Future[None] | None = None
        self.claimed: asyncio.Future[None] | None = None
        self._changed = asyncio.Event()

    @property
    def name(self) -> str:
        return self.lc.name

    def pulse(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def claim_done(self) -> None:
        """Its restore has claimed its PV names, or never will: the next in boot order's turn."""
        if self.claimed is not None and not self.claimed.done():
            self.claimed.set_result(None)

    async def until(self, done: Callable[[PluginLifecycle], bool]) -> PluginLifecycle:
        """Wait until the lifecycle satisfies ``done`` (checked after every event)."""
        while not done(self.lc):
            await self._changed.wait()
        return self.lc


class ShellPort(Protocol):
    """What the shell's work behind the checkout effects (``checkout_work``, ``upgrade_work``)
    uses of the shell: they see it through this face, so the imports run one way (the
    shell imports its work, never the other way round)."""

    settings: Settings
    services: Services

    def feed(self, slot: PluginSlot, event: t.Event) -> None: ...

    async def in_order(self, slot: PluginSlot, work: Callable[..., Any], *args: Any) -> Any: ...

    def storage_refused(self, error: IochostError) -> None: ...

    def configured_pv_prefix(self, name: str, plugin_dir: Path) -> str | None: ...

    def pv_clash(self, slot: PluginSlot, pv_prefix: str | None) -> IochostError | None: ...

    def log_path(self, name: str) -> Path: ...
