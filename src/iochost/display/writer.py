"""Where operators get the displays: generated for the API, and kept in ``DATA_DIR/displays/``.

``DisplaySync`` follows the supervisor's event stream: a plugin that settles (running,
paused, stopped, crashed, failed) after an add, a restore or an upgrade gets its
``<name>.bob`` rewritten, a deleted one loses it, and ``index.bob`` follows the plugin set.
The event reader only marks names; one task regenerates them, so a burst of events (a
daemon restoring many plugins) never slows the supervisor's queue. A file is rewritten only
when its bytes changed, atomically (temp + fsync + rename), so a Phoebus host or web server
sharing the folder never reads half a file.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iochost.config import ConfigError, PluginConfig, PVGroup
from iochost.display.catalog import INDEX_FILE, IndexRow, display_file
from iochost.durable import write_atomically
from iochost.errors import ErrorCode, IochostError
from iochost.kinds import Kind
from iochost.supervisor.states import State

if TYPE_CHECKING:
    from iochost.settings import Settings
    from iochost.supervisor import Supervisor
    from iochost.supervisor.public import StreamEvent
    from iochost.supervisor.view import PluginView

log = logging.getLogger("iochost.display")

# Transitions after which a plugin's display may differ (new revision, restored checkout).
REWRITE_ON = frozenset({State.RUNNING, State.PAUSED, State.STOPPED, State.CRASHED, State.FAILED})


def displays_dir(settings: "Settings") -> Path:
    """Where the daemon keeps the files: a folder to share with a Phoebus host."""
    return settings.data_dir / "displays"


def index_rows(sup: "Supervisor") -> list[IndexRow]:
    """The listed plugins with their row in the daemon's table PVs (on the event loop)."""
    table = sup.table_rows()
    return [IndexRow(view.name, view.entry.kind, table.get(view.name), view.pv_prefix) for view in sup.views()
            if view.listed]  # registered, and not in an add under way (a failed add leaves nothing here either)


async def plugin_bob(sup: "Supervisor", name: str) -> bytes:
    """A plugin's display from its checkout's config.yaml (with its parameter overrides);
    only the default PVs while no checkout is in place (still pending, restore failed)."""
    view = sup.view(name)  # PLUGIN_NOT_FOUND: the API's 404
    kind, plugin_dir, parameters = view.entry.kind, view.plugin_dir, dict(view.entry.parameters)
    try:
        return await asyncio.to_thread(_plugin_bob, name, sup.settings.prefix, kind, plugin_dir, parameters)
    except ConfigError as exc:  # validated at add; only a checkout changed underneath gets here
        raise IochostError(ErrorCode.INTERNAL_ERROR, f"{name}: its checkout's config.yaml no longer loads: {exc}",
                           plugin=name) from None


async def index_bob(sup: "Supervisor") -> bytes:
    """The daemon's index; START / STOP / RESTART buttons per row with ``--epics-control``."""
    return await asyncio.to_thread(_index_bob, sup.settings, index_rows(sup))


# The generator (pvi) is imported on first use, in the thread that renders: not before the
# API answers, and never on the event loop.
def _plugin_bob(name: str, prefix: str, kind: Kind, plugin_dir: Path | None, parameters: dict[str, Any]) -> bytes:
    from iochost.display.plugin import plugin_display, plugin_display_from_dir

    if plugin_dir is None:
        mode = ("triggered" if parameters.get("mode") == "triggered" else "continuous") if kind == "task" else None
        return plugin_display(name, prefix, kind, mode, PluginConfig(pvs=PVGroup()))
    return plugin_display_from_dir(plugin_dir, name, prefix, kind, parameters)


def _index_bob(settings: "Settings", rows: list[IndexRow]) -> bytes:
    from iochost.display.index import daemon_labels, index_display

    return index_display(settings.prefix, rows, settings.epics_control, daemon_labels(settings))


class DisplayFiles:
    """``DATA_DIR/displays/``: one ``<name>.bob`` per plugin and ``index.bob``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._written: dict[str, bytes] = {}

    def write(self, file_name: str, data: bytes) -> bool:
        """Replace ``file_name`` atomically unless it already holds ``data``; True if written
        (also when the file was removed behind the daemon's back: it is written again)."""
        path = self.folder / file_name
        if file_name not in self._written:  # a daemon restart finds the file as it left it
            try:
                if path.read_bytes() == data:
                    self._written[file_name] = data
            except OSError:
                pass
        if self._written.get(file_name) == data and path.is_file():
            return False
        # readable by all: a web server or Phoebus host sharing the volume reads the files
        write_atomically(path, data, file_mode=0o644, folder_mode=0o755)
        self._written[file_name] = data
        return True

    def exists(self, file_name: str) -> bool:
        return (self.folder / file_name).is_file()

    def remove(self, file_name: str) -> None:
        self._written.pop(file_name, None)
        (self.folder / file_name).unlink(missing_ok=True)

    def prune(self, keep: set[str]) -> list[str]:
        """Remove the .bob files (and temp files a crash left) of plugins no longer registered."""
        if not self.folder.is_dir():
            return []
        removed = []
        for path in self.folder.iterdir():
            stale_temp = path.name.startswith(".") and path.name.endswith(".tmp")
            if stale_temp or (path.suffix == ".bob" and path.name != INDEX_FILE and path.name not in keep):
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return removed


class DisplaySync:
    """Keeps ``DATA_DIR/displays/`` in step with the supervisor; started with the app."""

    def __init__(self, sup: "Supervisor") -> None:
        self.sup = sup
        self.files = DisplayFiles(displays_dir(sup.settings))
        self._dirty: set[str] = set()
        self._index_written: list[IndexRow] | None = None  # the rows index.bob holds (None: not written yet)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Subscribe, then leave the rest to a task of its own, which starts once the
        registry is restored (generating displays imports pvi and renders XML: CPU the API's
        first answer and the restore should have): stale files go, the index and every
        plugin's display are written, then each is kept in step as plugins settle."""
        reader = asyncio.create_task(self._read(), name="iochost-displays-events")
        await asyncio.sleep(0)  # the reader's first step subscribes: no event from here on is missed
        self._tasks = [reader, asyncio.create_task(self._write(), name="iochost-displays-write")]

    async def _prune(self) -> None:
        keep = {display_file(view.name) for view in self.sup.views()}
        try:
            removed = await asyncio.to_thread(self.files.prune, keep)
        except OSError:  # the panels are a convenience: never what stops the daemon
            log.exception("displays: %s not pruned", self.files.folder)
            return
        if removed:
            log.info("displays: removed %d stale file(s): %s", len(removed), ", ".join(sorted(removed)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _read(self) -> None:
        async for event in self.sup.subscribe():
            if event is None or not self._matters(event):
                continue
            if event.type == "transition" and event.data.get("to_state") == State.DELETED.value:
                # at once (one unlink, on the loop): gone by the time the DELETE answers
                self.files.remove(display_file(event.plugin))
            self._dirty.add(event.plugin)
            self._wake.set()

    @staticmethod
    def _matters(event: "StreamEvent") -> bool:
        if event.type == "upgrade":
            return True
        if event.type != "transition":
            return False
        to_state = event.data.get("to_state")
        return to_state == State.DELETED.value or to_state in {s.value for s in REWRITE_ON}

    async def _write(self) -> None:
        await self.sup.until_ready()  # rendering (pvi) would slow the API's first answer and the restore
        await self._prune()
        self._wake.set()  # the index, and the files it names that the folder lacks
        while True:
            await self._wake.wait()
            self._wake.clear()
            names, self._dirty = self._dirty, set()
            # every row of the index opens an existing file: write the missing ones too
            names |= {view.name for view in self.sup.views()
                      if view.listed and not self.files.exists(display_file(view.name))}
            for name in sorted(names):
                try:
                    await self._sync_plugin(name)
                except Exception:  # a full disk, a folder made read-only: the next event retries
                    log.exception("displays: %s not synced", display_file(name))
            await self._sync_index()

    async def _sync_index(self) -> None:
        """Rendered again only when its rows change (a plugin added, deleted, its PV prefix or
        table row moved) or the file is gone: a restart or a crash changes nothing it shows
        (states are PVs), and rendering is most of the daemon's CPU in an add."""
        rows = index_rows(self.sup)
        if rows == self._index_written and self.files.exists(INDEX_FILE):
            return
        try:
            data = await asyncio.to_thread(_index_bob, self.sup.settings, rows)
            await asyncio.to_thread(self.files.write, INDEX_FILE, data)
        except Exception:
            log.exception("displays: index.bob not written")
            return
        self._index_written = rows

    async def _sync_plugin(self, name: str) -> None:
        try:
            view: PluginView | None = self.sup.view(name)
        except IochostError:
            view = None
        file_name = display_file(name)
        if view is None or view.state == State.DELETED:
            await asyncio.to_thread(self.files.remove, file_name)
            return
        if not view.listed:
            return
        if view.plugin_dir is None and self.files.exists(file_name):
            return  # restoring: the file the last run wrote stays until the checkout is back
        try:
            data = await plugin_bob(self.sup, name)
        except IochostError as exc:  # e.g. a checkout whose config no longer loads
            log.warning("displays: %s not written: %s", file_name, exc)
            return
        if not any(other.name == name and other.entry.created_at == view.entry.created_at and other.listed
                   for other in self.sup.views()):
            return  # deleted (or replaced) while it was rendered: the deleted event removes the file
        if await asyncio.to_thread(self.files.write, file_name, data):
            log.info("displays: wrote %s", self.files.folder / file_name)
