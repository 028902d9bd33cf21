"""The supervisor's parts that need no daemon: the event bus, the plugin table, PV claims.

The daemon's own paths through them (SSE, restore, adds) are the end-to-end tests'
(test_daemon.py, test_pv_segment.py); here are the rules those paths rarely reach.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from iochost.errors import ErrorCode, IochostError
from iochost.settings import Settings, daemon_limits
from iochost.store import PluginSource, RegistryEntry
from iochost.supervisor import event_bus
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.event_bus import EventBus, stream_event
from iochost.supervisor.lifecycle import PluginLifecycle
from iochost.supervisor.plugin_table import PluginTable
from iochost.supervisor.public import StreamEvent, Transition
from iochost.supervisor.pv_claims import PVClaims
from iochost.supervisor.shell import clock
from iochost.supervisor.slots import PluginSlot
from iochost.supervisor.states import State

SETTINGS = Settings(prefix="P")
TIMINGS = t.Timings.from_settings(SETTINGS)


def slot(name: str, kind: str = "task", pv_prefix: str | None = None) -> PluginSlot:
    """A registered plugin's slot; with ``pv_prefix``, restored with that prefix read from its
    config.yaml (as the restore learns it), else still pending."""
    now = datetime.now(timezone.utc)
    entry = RegistryEntry(name=name, kind=kind, class_name="C", source=PluginSource(local_path=f"/src/{name}"),  # type: ignore[arg-type]
                          module_file="c.py", created_at=now, updated_at=now)
    lc = PluginLifecycle(entry, f"P:{name.upper()}", TIMINGS, SETTINGS.runs_kept, clock(), daemon_limits(SETTINGS))
    if pv_prefix is not None:
        lc.handle(t.RestoreRequested(), clock())
        lc.handle(t.Restored(Path(f"/src/{name}"), pv_prefix=pv_prefix), clock())
    return PluginSlot(lc)


def table_of(*slots: PluginSlot) -> PluginTable:
    table = PluginTable()
    table.slots.update({s.name: s for s in slots})
    return table


def event(n: int) -> StreamEvent:
    return StreamEvent(type="status", plugin=f"p{n}", at=datetime(2026, 1, 1, tzinfo=timezone.utc))


# -- the event bus ---------------------------------------------------------------------------
def test_a_subscriber_too_slow_is_dropped_and_the_others_keep_their_events(monkeypatch, caplog):
    monkeypatch.setattr(event_bus, "EVENT_QUEUE_SIZE", 2)

    async def scenario() -> tuple[list[StreamEvent | None], list[StreamEvent | None]]:
        bus = EventBus()
        slow, fast = bus.subscribe(keepalive=0.05), bus.subscribe(keepalive=0.05)
        assert await anext(slow) is None and await anext(fast) is None  # both subscribed (keepalive)
        bus.publish(event(1))
        bus.publish(event(2))
        assert await anext(fast) == event(1) and await anext(fast) == event(2)
        bus.publish(event(3))  # slow's queue holds 2: it is dropped, publish does not wait or raise
        read_slow = [await anext(slow), await anext(slow)]  # what it had queued
        bus.publish(event(4))  # room in its queue again, but it is no longer subscribed
        read_slow.append(await anext(slow))
        read_fast = [await anext(fast) for _ in range(2)]
        await slow.aclose()
        await fast.aclose()
        return read_slow, read_fast

    with caplog.at_level(logging.WARNING, logger="iochost.supervisor"):
        read_slow, read_fast = asyncio.run(scenario())
    assert read_slow == [event(1), event(2), None]  # events 3 and 4 never reached it
    assert read_fast == [event(3), event(4)]
    assert "event subscriber too slow; dropping it" in caplog.text


def test_clients_see_transitions_statuses_runs_and_upgrades_only():
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    moved = stream_event("p", t.Transitioned(Transition(at=at, from_state=State.STARTING, to_state=State.RUNNING)))
    assert moved is not None and (moved.type, moved.plugin, moved.at) == ("transition", "p", at)
    assert moved.data["to_state"] == "running"
    assert stream_event("p", t.Later(1.0, t.RestartDue(1))) is None


# -- the plugin table ------------------------------------------------------------------------
def test_find_names_what_is_missing_and_what_is_of_the_other_kind():
    table = table_of(slot("task1"), slot("job1", kind="job"))
    assert table.find("job1", "job").name == "job1"
    with pytest.raises(IochostError) as missing:
        table.find("nope")
    assert missing.value.code is ErrorCode.PLUGIN_NOT_FOUND
    with pytest.raises(IochostError) as wrong:
        table.find("task1", "job")
    assert wrong.value.code is ErrorCode.WRONG_KIND
    assert [s.name for s in table.supervised()] == ["task1", "job1"]
    table.system = slot("iochost")
    assert [s.name for s in table.supervised()] == ["task1", "job1", "iochost"]


# -- PV claims -------------------------------------------------------------------------------
def test_a_name_is_taken_case_aside_and_the_daemons_is_reserved():
    claims = PVClaims(SETTINGS, table_of(slot("Demo")))
    for name, says in (("demo", "same PV names as 'Demo'"), ("Demo", "already exists"), ("IOCHOST", "reserved")):
        with pytest.raises(IochostError) as taken:
            claims.check_name_free(name)
        assert taken.value.code is ErrorCode.PLUGIN_EXISTS and says in taken.value.message
    claims.check_name_free("other")


def test_a_prefix_clashes_with_the_daemons_and_with_one_inside_or_around_another_plugins():
    claims = PVClaims(SETTINGS, table_of(slot("a", pv_prefix="P:SEG")))
    daemon = claims.clash("x", "p:iochost")
    assert daemon is not None and "the daemon's own PVs" in daemon.message
    same = claims.clash("x", "P:seg")
    assert same is not None and same.details["other"] == "a" and "as plugin 'a''s" in same.message
    nested = claims.clash("x", "P:SEG:SUB")
    assert nested is not None and "inside or around" in nested.message
    assert claims.clash("a", "P:SEG") is None  # its own
    assert claims.clash("x", "P:SEGMENT") is None


def test_a_registered_plugin_not_restored_yet_keeps_its_boot_claim_against_a_newcomer_only():
    pending = slot("old")  # registered, its restore not done: its prefix is only the checkout's
    newcomer = slot("new")
    newcomer.lc.handle(t.AddRequested(), clock())  # an add in progress
    claims = PVClaims(SETTINGS, table_of(pending, newcomer))
    claims.boot_claims = {"old": "P:OLDSEG"}
    clash = claims.clash("new", "P:OLDSEG")
    assert clash is not None and clash.details["other"] == "old"
    assert claims.clash("old", "P:OLDSEG") is None  # the restore claiming its own
