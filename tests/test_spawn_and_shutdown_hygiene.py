"""What the daemon needs to start processes, and SIGTERM at awkward moments, under hostile or broken conditions (issue
29, items 9 and 11): a connection flood or too few file descriptors cannot keep a worker down, a stopped fork server
never fails a valid plugin, worker specs holding parameters are private, and SIGTERM during an upgrade's validation,
a job run or an add's clone answers the JSON error body and ends at once.

The API's sockets under the same conditions are in test_http_hygiene.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import threading
from pathlib import Path

import httpx
import pytest

from daemon_harness import Daemon, add, live_processes, wait_until, worker_pids
from gitrepos import plugin_repo
from sample_plugins import SLOW_JOB, SLOW_JOB_CONFIG, TICKER, TICKER_CONFIG
from test_http_hygiene import close_all, closed_by_server, connect

NOFILE = 400  # the daemon's open-file limit in the tests below; they hold more connections than that
FLOOD = 600


def _one_worker(daemon: Daemon) -> int:
    pids = worker_pids(daemon.data_dir, "tick")
    assert len(pids) == 1, pids
    return pids[0]


@pytest.mark.slow
def test_a_connection_flood_cannot_keep_a_crashed_worker_down(tmp_path: Path) -> None:
    """Derived cap (NOFILE - 256): the connections over it are closed at once, so the daemon
    keeps the files a respawn needs while the flood lasts."""
    daemon = Daemon(tmp_path / "data", "--http-timeout", "120", "--backoff-initial", "0.5", nofile=NOFILE)
    repo = plugin_repo(tmp_path, "tick", TICKER, TICKER_CONFIG)
    with daemon.serving(), daemon.client() as api:
        add(api, "tick", repo)
        first = _one_worker(daemon)
        flood = connect(daemon, FLOOD)
        try:
            refused = wait_until(lambda: sum(closed_by_server(sock, 0.05) for sock in flood) >= FLOOD - NOFILE,
                                 timeout=60, what="the connections over the cap to be closed")
            assert refused
            os.killpg(first, signal.SIGKILL)
            second = wait_until(lambda: [pid for pid in worker_pids(daemon.data_dir, "tick") if pid != first],
                                timeout=60, what="the crashed worker to be respawned during the flood")
        finally:
            close_all(flood)
        record = wait_until(lambda: (r := api.get("/plugins/tick").json())["state"] == "running" and r,
                            timeout=60, what="tick running again")
        assert record["pid"] == second[0]


@pytest.mark.slow
def test_a_spawn_that_fails_for_want_of_files_is_retried_until_it_starts(tmp_path: Path) -> None:
    """No cap (above the limit): the flood takes every file; the respawn fails with EMFILE,
    is retried with backoff, and the plugin runs again by itself once the files are back.

    The dead worker's pipes and socket free a few files; the event loop retries a refused
    accept every second (asyncio's ACCEPT_RETRY_DELAY) and the flood's connections still
    wait in the backlog, so with a first backoff of 3 s the flood has taken them back before
    the respawn asks for them. Meanwhile the refused accepts are one log line, not one per
    queued connection per retry (event_loop.py)."""
    daemon = Daemon(tmp_path / "data", "--http-timeout", "120", "--http-max-connections", "100000",
                    "--backoff-initial", "3", "--backoff-max", "4", nofile=NOFILE)
    repo = plugin_repo(tmp_path, "tick", TICKER, TICKER_CONFIG)
    with daemon.serving(), daemon.client() as api:
        add(api, "tick", repo)
        first = _one_worker(daemon)
        flood = connect(daemon, FLOOD)
        try:
            # connected is not yet accepted: the daemon takes its files as it accepts, so the kill
            # waits until it holds all but a few (a respawn needs more than that)
            assert daemon.proc is not None
            wait_until(lambda: len(os.listdir(f"/proc/{daemon.proc.pid}/fd")) >= NOFILE - 4, timeout=60,
                       what="the flood to take the daemon's files")
            os.killpg(first, signal.SIGKILL)
            # the kill is restart #1; a respawn that fails for want of files is a crash too: #2
            wait_until(lambda: "restart #2" in daemon.log(), timeout=60,
                       what="the respawn that failed for want of files to be retried")
        finally:
            close_all(flood)
        record = wait_until(lambda: (r := api.get("/plugins/tick").json())["state"] == "running" and r,
                            timeout=90, what="tick to come back by itself")
        assert record["pid"] != first
        crashed = [t for t in record["transitions"] if t["to_state"] == "crashed"]
        assert any("Too many open files" in t["reason"] for t in crashed), record["transitions"]
        assert not [t for t in record["transitions"] if t["to_state"] == "failed"], record["transitions"]
    log = daemon.log()
    assert "socket.accept() out of system resource" not in log
    assert 1 <= log.count("API: cannot accept new connections: [Errno 24] Too many open files") <= 2, log[-3000:]


SLOW_IMPORT = """
    import os, pathlib, time
    from iochost import TaskBase

    pathlib.Path({marker!r}).write_text("importing")
    time.sleep(20)  # past uvicorn's 5 s of graceful shutdown, which then cuts the request

    class Ticker(TaskBase):
        def execute(self):
            pass
"""


@pytest.mark.slow
def test_sigterm_during_an_upgrades_validation_answers_the_json_error_body(tmp_path: Path) -> None:
    marker = tmp_path / "validating"
    daemon = Daemon(tmp_path / "data", "--import-timeout", "600")  # the probe is ended, not waited out
    repo = plugin_repo(tmp_path, "tick", TICKER, TICKER_CONFIG)
    answers: list[httpx.Response | BaseException] = []
    try:
        daemon.start()
        with daemon.client() as api:
            add(api, "tick", repo)
            repo.write({"tick.py": SLOW_IMPORT.format(marker=str(marker))})
            commit = repo.commit("imports for ever")

            def upgrade() -> None:
                try:
                    answers.append(api.post("/plugins/tick/upgrade", json={"commit": commit}))
                except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                    answers.append(exc)

            caller = threading.Thread(target=upgrade, name="upgrade-caller")
            caller.start()
            wait_until(marker.exists, timeout=60, what="the new revision's import to start")
            assert daemon.terminate(timeout=120) == 0, daemon.log()[-2000:]
            caller.join(60)
        assert len(answers) == 1 and isinstance(answers[0], httpx.Response), answers
        response = answers[0]
        assert response.headers["content-type"] == "application/json", response.text
        assert response.status_code == 503 and response.json()["code"] == "SHUTTING_DOWN", response.text
    finally:
        daemon.cleanup()


def launch_processes(daemon: Daemon) -> list[int]:
    """The daemon's fork server: its template and idle members (children of the daemon)."""
    assert daemon.proc is not None
    return [pid for pid, (parent, cmdline) in live_processes().items()
            if b"iochost.launch" in cmdline and parent == daemon.proc.pid]


@pytest.mark.slow
def test_a_stopped_fork_server_never_fails_a_valid_plugin(tmp_path: Path) -> None:
    """SIGSTOP the template and every idle member: the add still works (or, if nothing can
    start a process, answers the daemon's LAUNCHER_UNAVAILABLE), never VALIDATION_FAILED."""
    daemon = Daemon(tmp_path / "data")
    repo = plugin_repo(tmp_path, "tick", TICKER, TICKER_CONFIG)
    stopped: list[int] = []
    with daemon.serving(), daemon.client() as api:
        try:
            stopped = wait_until(lambda: len(pids := launch_processes(daemon)) >= 4 and pids, timeout=60,
                                 what="the template and its pool (2 warm, 1 cold)")
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)
            response = api.post("/plugins", json={"name": "tick", "git_url": repo.url})
            if response.status_code != 201:
                assert response.status_code == 503, response.text
                assert response.json()["code"] == "LAUNCHER_UNAVAILABLE", response.text
            else:
                assert api.get("/plugins/tick").json()["state"] == "running"
            assert "is stopped" in daemon.log(), "the stopped fork server was not reported"
        finally:
            for pid in stopped:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.mark.slow
def test_worker_specs_holding_parameters_are_private(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "data")
    repo = plugin_repo(tmp_path, "tick", TICKER, TICKER_CONFIG)
    with daemon.serving(), daemon.client() as api:
        add(api, "tick", repo, parameters={"interval": 0.3, "secret": "s3cr3t"})
        run_dir = daemon.data_dir / "run"
        spec = run_dir / "tick.json"
        assert "s3cr3t" in spec.read_text()
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run_dir.iterdir()}
        assert modes and set(modes.values()) == {0o600}, modes
        assert stat.S_IMODE((daemon.data_dir / "registry.json").stat().st_mode) == 0o600


class Stopper:
    """SIGSTOPs every fork-server process of ``daemon`` that appears after it started (new
    templates, members forked by the pool's keeper or for a start), as it appears, so one is
    caught at any moment of its start; the pids are kept to kill at the end."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.known = set(launch_processes(daemon))
        self.stopped: list[int] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stopper")

    def __enter__(self) -> "Stopper":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._done.wait(0.005):
            for pid in set(launch_processes(self.daemon)) - self.known:
                self.known.add(pid)
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    continue
                self.stopped.append(pid)

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        for pid in self.stopped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_a_fork_server_stopped_while_it_starts_a_process_is_given_up_at_once(tmp_path: Path) -> None:
    """Every template and member the daemon starts is stopped as soon as it exists, before it
    has said hello or while it imports softioc: the daemon sees each is stopped and spawns
    the worker instead, rather than waiting out the template's 30 s or the member's 60 s."""
    daemon = Daemon(tmp_path / "data")
    repo = plugin_repo(tmp_path, "tick", TICKER, TICKER_CONFIG)
    with daemon.serving(), daemon.client() as api:
        add(api, "tick", repo)
        wait_until(lambda: len(launch_processes(daemon)) >= 4, timeout=60, what="the template and its pool")
        with Stopper(daemon) as stopper:
            for pid in launch_processes(daemon):  # what is there now: everything after it is new
                os.kill(pid, signal.SIGKILL)
            restarted = api.post("/plugins/tick/restart")
            added = api.post("/plugins", json={"name": "tock", "git_url": repo.url})
            assert (restarted.status_code, restarted.json()["state"]) == (200, "running"), restarted.text
            assert (added.status_code, added.json()["state"]) == (201, "running"), added.text
            assert stopper.stopped, "no fork-server process was started during the restart and the add"
            wait_until(lambda: "stopped before it answered" in daemon.log(), timeout=30,
                       what="a stopped template or member given up without its timeout")
        assert "did not get ready: timed out" not in daemon.log()


@pytest.mark.slow
def test_sigterm_during_a_job_run_answers_the_json_error_body_and_logs_no_error(tmp_path: Path) -> None:
    """A caller waiting for a run when the daemon stops gets SHUTTING_DOWN in the API's shape;
    the cut request is not an "Exception in ASGI application" traceback in the daemon's log."""
    daemon = Daemon(tmp_path / "data")
    answers: list[httpx.Response | BaseException] = []
    try:
        daemon.start()
        with daemon.client() as api:
            add(api, "slow", plugin_repo(tmp_path, "slow", SLOW_JOB, SLOW_JOB_CONFIG))

            def run() -> None:
                try:
                    answers.append(api.post("/jobs/slow/run", json={"parameters": {"steps": 100_000}}))
                except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                    answers.append(exc)

            caller = threading.Thread(target=run, name="run-caller")
            caller.start()
            wait_until(lambda: [r for r in api.get("/jobs/slow/runs").json()["runs"] if r["state"] == "running"],
                       timeout=60, what="the run to start")
            assert daemon.terminate(timeout=120) == 0, daemon.log()[-2000:]
            caller.join(60)
        assert len(answers) == 1 and isinstance(answers[0], httpx.Response), answers
        response = answers[0]
        assert response.status_code == 503 and response.json()["code"] == "SHUTTING_DOWN", response.text
        errors = [json.loads(line) for line in daemon.log().splitlines() if '"level": "error"' in line]
        assert not [e for e in errors if "Exception in ASGI application" in e["message"]], errors
    finally:
        daemon.cleanup()


@pytest.mark.slow
def test_sigterm_during_an_adds_clone_ends_git_and_the_daemon_at_once(tmp_path: Path) -> None:
    """A git server that accepts and never answers holds the clone until --git-timeout
    (here 600 s). SIGTERM answers the caller SHUTTING_DOWN and kills the clone's git: the
    daemon exits without waiting out the time limit (Kubernetes sends SIGKILL after its
    grace period, and a rollout waits on it)."""
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True)
    accepting.start()
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/never.git"
    daemon = Daemon(tmp_path / "data", "--git-timeout", "600")
    answers: list[httpx.Response | BaseException] = []
    try:
        daemon.start()
        with daemon.client() as api:
            def post() -> None:
                try:
                    answers.append(api.post("/plugins", json={"name": "stuck", "git_url": url}))
                except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                    answers.append(exc)

            caller = threading.Thread(target=post, name="add-caller")
            caller.start()
            accepting.join(60)
            assert held, "git never connected"
            gits = [pid for pid, (_, cmdline) in live_processes().items()
                    if cmdline.startswith(b"git\0") and url.encode() in cmdline]
            assert gits, "no git clone running"
            assert daemon.terminate(timeout=120) == 0, daemon.log()[-2000:]  # not the 600 s of --git-timeout
            caller.join(60)
        assert len(answers) == 1 and isinstance(answers[0], httpx.Response), answers
        assert answers[0].status_code == 503 and answers[0].json()["code"] == "SHUTTING_DOWN", answers[0].text
        assert not [pid for pid in gits if pid in live_processes()], "git outlived the daemon"
        assert "ended 1 git, pip or validation process(es)" in daemon.log()
    finally:
        daemon.cleanup()
        for conn in held:
            conn.close()
        silent.close()

