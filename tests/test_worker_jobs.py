"""The worker's jobs end to end: a job run from the supervisor or the EPICS run PV reports its result, a failure sets
failed, a second run is refused and a run cancelled, a job over its memory limit ends the worker.

Real soft IOC processes, real CA (libca) clients.
"""

from __future__ import annotations

import datetime

import pytest

import test_worker
from conftest import wait_for
from iochost.contract import messages
from sample_plugins import make_plugin
from test_worker import (
    _fresh_prefix,  # noqa: F401 - an autouse fixture: it gives each test a new test_worker.PREFIX
    start,
)

SLOW_JOB = """
    import time
    from iochost import JobBase, JobResult

    class Slow(JobBase):
        def initialize(self):
            pass

        def execute(self):
            for _ in range(int(self.parameters["steps"])):
                time.sleep(0.1)
                self.check_cancelled()
            if self.parameters.get("fail"):
                raise RuntimeError("detector not answering")
            self.set_pv("COUNT", self.get_pv("COUNT") + 1)
            return JobResult(success=True, data={"steps": self.parameters["steps"]}, message="done")
"""
SLOW_CONFIG = """
    parameters:
      steps: 5
    pvs:
      outputs:
        COUNT: {type: int, value: 0}
"""


@pytest.fixture
def slow_job(processes, tmp_path):
    plugin_dir = make_plugin(tmp_path, "slowjob", SLOW_JOB, SLOW_CONFIG)
    return start(processes, tmp_path, plugin_dir, "slowjob", "Slow")


def _status_values(ca, pv: str, action) -> list[str]:
    seen: list[str] = []
    sub = ca.camonitor(pv, seen.append, datatype=ca.DBR_STRING)
    try:
        wait_for(lambda: seen, what="first monitor update")
        action()
        wait_for(lambda: seen[-1] in ("SUCCESS", "FAILED"), what="run finished")
    finally:
        sub.close()
    return seen


def test_job_run_from_supervisor_reports_result(slow_job, ca):
    pv = f"{test_worker.PREFIX}:SLOWJOB:"
    assert ca.caget(pv + "STATUS", datatype=ca.DBR_STRING, timeout=5) == "IDLE"
    run = messages.RunJob(run_id="r1", parameters={"steps": 3})
    seen = _status_values(ca, pv + "STATUS", lambda: slow_job.send(run))
    assert seen[-2:] == ["RUNNING", "SUCCESS"]
    finished = slow_job.wait_event(messages.RunFinished, lambda m: m.run_id == "r1")
    assert finished.outcome == "succeeded"
    stamp = finished.result.pop("timestamp")  # iocmng's: when the JobResult was made, local ISO 8601
    assert datetime.datetime.fromisoformat(stamp).tzinfo is None
    assert finished.result == {"success": True, "data": {"steps": 3}, "message": "done"}
    assert ca.caget(pv + "COUNT", timeout=5) == 1


def test_job_failure_sets_failed(slow_job, ca):
    pv = f"{test_worker.PREFIX}:SLOWJOB:"
    run = messages.RunJob(run_id="r2", parameters={"steps": 1, "fail": True})
    seen = _status_values(ca, pv + "STATUS", lambda: slow_job.send(run))
    assert seen[-2:] == ["RUNNING", "FAILED"]
    finished = slow_job.wait_event(messages.RunFinished, lambda m: m.run_id == "r2")
    assert finished.outcome == "failed"
    assert "detector not answering" in finished.result["message"]
    assert "detector not answering" in ca.caget(pv + "MESSAGE", timeout=5)


def test_job_second_run_rejected_and_cancel(slow_job):
    slow_job.send(messages.RunJob(run_id="long", parameters={"steps": 100}))
    slow_job.wait_event(messages.RunAccepted, lambda m: m.run_id == "long")
    slow_job.send(messages.RunJob(run_id="other"))
    rejected = slow_job.wait_event(messages.RunRejected, lambda m: m.run_id == "other")
    assert rejected.active_run_id == "long"
    slow_job.send(messages.CancelRun(run_id="long"))
    finished = slow_job.wait_event(messages.RunFinished, lambda m: m.run_id == "long", timeout=5)
    assert finished.outcome == "cancelled"


def test_job_run_from_epics_run_pv(slow_job, ca):
    pv = f"{test_worker.PREFIX}:SLOWJOB:"
    ca.caput(pv + "RUN", 1, wait=True, timeout=5)
    started = slow_job.wait_event(messages.RunAccepted)
    assert started.origin == "epics"
    slow_job.wait_event(messages.RunFinished, lambda m: m.run_id == started.run_id)
    wait_for(lambda: ca.caget(pv + "COUNT", timeout=5) == 1, what="COUNT=1")
    assert ca.caget(pv + "RUN", timeout=5) == 0
    assert ca.caget(pv + "STATUS", datatype=ca.DBR_STRING, timeout=5) == "SUCCESS"


def test_job_over_its_memory_limit_ends_the_worker(processes, tmp_path):
    """A MemoryError in a job run is the worker's end, as in a task, not a failed run."""
    from iochost.contract.exits import WorkerExit

    code = """
        from iochost import JobBase, JobResult

        class Greedy(JobBase):
            def initialize(self):
                pass

            def execute(self):
                kept = []
                while True:
                    kept.append(bytearray(50 * 1024 * 1024))
    """
    plugin_dir = make_plugin(tmp_path, "greedy", code, "parameters: {}\n")
    worker = start(processes, tmp_path, plugin_dir, "greedy", "Greedy", memory_limit_mb=300)
    worker.send(messages.RunJob(run_id="big"))
    assert worker.proc.wait(timeout=30) == WorkerExit.OUT_OF_MEMORY
    assert not any(isinstance(m, messages.RunFinished) for m in worker.events)

