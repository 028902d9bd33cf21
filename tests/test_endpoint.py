"""One EPICS endpoint for every plugin: clients configured with only the daemon's address
(unicast, loopback) reach every worker's PVs over CA and PVA, and the daemon's own PVs
describe the controller. Real daemon, real workers, real libca and pvxs clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import CA_PORT, ca_search, wait_for
from daemon_harness import add, delete
from gitrepos import plugin_repo
from sample_plugins import TICKER, TICKER_CONFIG

pytestmark = pytest.mark.slow

CRASH_IN_EXECUTE = """
    import os
    from iochost import TaskBase

    class Doomed(TaskBase):
        def initialize(self):
            pass

        def execute(self):
            os._exit(3)

        def cleanup(self):
            pass
"""


def _client(env: dict[str, str], code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A libca client in a fresh process: no channel cache, only ``env`` says where to search."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env}, start_new_session=True)


CAGET = """
import json, sys
from cothread.catools import caget
values = caget(sys.argv[1:], timeout=5, throw=False)
print(json.dumps({pv: (v.ok and str(v)) for pv, v in zip(sys.argv[1:], values)}))
"""


def test_five_runtime_plugins_resolve_over_unicast_ca_and_pva(api, repos, ca, pva):
    records = [add(api, f"unit{i}", plugin_repo(repos, f"unit{i}", TICKER, TICKER_CONFIG, module="ticker"))
               for i in range(5)]
    every_pv = [pv for record in records for pv in record["pvs"]]
    assert ca_search(every_pv) == set(every_pv)  # the endpoint answers for all of them
    values = ca.caget(every_pv, timeout=5, throw=False)
    assert [pv for pv, v in zip(every_pv, values, strict=True) if not v.ok] == []
    for record in records:
        limit = pva.get(record["pv_prefix"] + ":GAIN", timeout=5)
        assert limit.value == 2.5 and limit.display.units == "V"
    # The test process's client was configured before these plugins existed: still found.
    gone = records.pop(2)
    delete(api, gone["name"])
    assert ca_search(gone["pvs"]) == set()
    with pytest.raises(TimeoutError):
        pva.get(gone["pv_prefix"] + ":VALUE", timeout=2)
    remaining = [pv for record in records for pv in record["pvs"]]
    fresh = json.loads(_client({}, CAGET, *remaining).stdout)
    assert all(v is not False for v in fresh.values()), fresh
    for record in records:
        assert pva.get(record["pv_prefix"] + ":VALUE", timeout=5).value >= 1
        delete(api, record["name"])


def test_ca_monitor_resumes_after_worker_restart_and_crash(api, repos, ca):
    record = add(api, "watched", plugin_repo(repos, "watched", TICKER, TICKER_CONFIG, module="ticker"))
    pv = record["pv_prefix"] + ":VALUE"
    updates: list[tuple[float, bool, float | None]] = []
    monitor = ca.camonitor(pv, lambda v: updates.append((time.monotonic(), v.ok, float(v) if v.ok else None)),
                           notify_disconnect=True)
    try:
        wait_for(lambda: len(updates) > 3, timeout=20, what="monitor updates")
        for how in ("restart", "crash"):
            mark = len(updates)
            if how == "restart":
                assert api.post("/plugins/watched/restart").status_code == 200
            else:
                pid = api.get("/plugins/watched").json()["pid"]
                os.kill(pid, 9)
            wait_for(lambda: any(not ok for _, ok, _ in updates[mark:]), timeout=20, what=f"disconnect ({how})")
            down = next(i for i in range(mark, len(updates)) if not updates[i][1])
            # VALUE starts again from 1 in the new worker: updates flow from the new process.
            wait_for(lambda: any(ok and v is not None and v >= 2 for _, ok, v in updates[down:]),
                     timeout=30, what=f"monitor resumes after {how}")
    finally:
        monitor.close()
    delete(api, "watched")


def test_daemon_pvs_track_plugins_and_health(api, repos, ca):
    from iochost import __version__

    base = api.get("/health").json()["plugins"]["total"]
    assert ca.caget("IOCHT:IOCHOST:VERSION", timeout=5) == __version__
    first_uptime = ca.caget("IOCHT:IOCHOST:UPTIME", timeout=5)
    wait_for(lambda: ca.caget("IOCHT:IOCHOST:PLUGINS", timeout=5) == base, what="PLUGINS = current count")
    add(api, "tracked", plugin_repo(repos, "tracked", TICKER, TICKER_CONFIG, module="ticker"))
    wait_for(lambda: ca.caget("IOCHT:IOCHOST:PLUGINS", timeout=5) == base + 1, what="PLUGINS + 1")
    assert ca.caget("IOCHT:IOCHOST:RUNNING", timeout=5) >= 1
    assert "tracked" in ca.caget("IOCHT:IOCHOST:NAMES", timeout=5, datatype=ca.DBR_CHAR_STR).split(",")
    assert ca.caget("IOCHT:IOCHOST:HEALTH", datatype=ca.DBR_STRING, timeout=5) == "OK"

    response = api.post("/plugins", json={"name": "doomed", "git_url": plugin_repo(
        repos, "doomed", CRASH_IN_EXECUTE, "parameters: {interval: 1}\n", module="doomed").url})
    assert response.status_code == 201, response.text  # starts, then crashes in execute()
    wait_for(lambda: ca.caget("IOCHT:IOCHOST:FAILED", timeout=5) >= 1, timeout=20, what="FAILED counted")
    assert ca.caget("IOCHT:IOCHOST:HEALTH", datatype=ca.DBR_STRING, timeout=5) == "DEGRADED"
    assert api.get("/health").json()["status"] == "degraded"
    delete(api, "doomed")
    delete(api, "tracked")
    wait_for(lambda: ca.caget("IOCHT:IOCHOST:HEALTH", datatype=ca.DBR_STRING, timeout=5) == "OK",
             what="healthy again")
    assert ca.caget("IOCHT:IOCHOST:PLUGINS", timeout=5) == base
    assert "tracked" not in ca.caget("IOCHT:IOCHOST:NAMES", timeout=5, datatype=ca.DBR_CHAR_STR).split(",")
    assert ca.caget("IOCHT:IOCHOST:UPTIME", timeout=5) > first_uptime


def test_broadcast_search_gets_one_answer_per_pv(api, repos):
    records = [add(api, f"bcast{i}", plugin_repo(repos, f"bcast{i}", TICKER, TICKER_CONFIG, module="ticker"))
               for i in range(3)]
    pvs = [pv for record in records for pv in record["pvs"]] + ["IOCHT:IOCHOST:PLUGINS"]
    result = _client({"EPICS_CA_ADDR_LIST": "127.255.255.255", "EPICS_CA_AUTO_ADDR_LIST": "NO",
                      "EPICS_CA_SERVER_PORT": str(CA_PORT)}, CAGET, *pvs)
    values = json.loads(result.stdout)
    assert all(v is not False for v in values.values()), values
    assert "Identical process variable names on multiple servers" not in result.stderr, result.stderr
    for record in records:
        delete(api, record["name"])
