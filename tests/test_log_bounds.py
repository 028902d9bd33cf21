"""Logs are bounded whatever a plugin writes: a plugin flooding stdout, fd 2 (as C code
writes) and its logger until it wrote FLOOD_VOLUMES times the configured volume leaves at most
that volume on disk, its log rotates while it runs, the daemon's own log file stays bounded,
and the lines forwarded into it are rate-limited with a "not forwarded" note. The budget is
small (ROTATE_BYTES is near the settings' minimum) so a few seconds of flood show what a long
one would. Real daemon, real worker, real CA. The daemon's CPU during the flood is printed
(``-s``); bench/hostile_plugin.py reports it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from daemon_harness import Daemon
from gitrepos import plugin_repo
from sample_plugins import FLOOD, FLOOD_CONFIG

ROTATE_BYTES = 128 * 1024
ROTATE_FILES = 3
LOG_RATE = (20, 1.0)  # forwarded lines: 20 per second
FLOOD_VOLUMES = 30  # the flood writes this many times what the plugin's log may keep on disk

def cpu_seconds(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_files(path: Path) -> dict[str, int]:
    """Name -> size of the log and its rotated files (one renamed meanwhile is skipped)."""
    sizes = {}
    for entry in path.parent.glob(path.name + "*"):
        try:
            sizes[entry.name] = entry.stat().st_size
        except FileNotFoundError:
            continue
    return sizes


@pytest.fixture(params=["throttled", "unthrottled"])
def flood_daemon(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Daemon]:
    """The default output throttle (the plugin's writes wait past 4 MB/s), and none at all
    (the plugin really writes hundreds of MB/s; rotation alone bounds the disk)."""
    args = ["--log-file", str(tmp_path / "daemon" / "iochost.log"),
            "--log-rotate-bytes", str(ROTATE_BYTES), "--log-rotate-files", str(ROTATE_FILES),
            "--plugin-log-rate", f"{LOG_RATE[0]}/{LOG_RATE[1]:g}"]
    if request.param == "unthrottled":
        args += ["--log-throttle-mb", "0"]
    with Daemon(tmp_path / "data", *args).serving() as daemon:
        yield daemon


@pytest.mark.slow
def test_a_log_flood_leaves_bounded_logs_and_a_rate_limited_daemon_log(
        flood_daemon: Daemon, tmp_path: Path, ca: object) -> None:
    repo = plugin_repo(tmp_path, "flood", FLOOD, FLOOD_CONFIG)
    daemon_log = tmp_path / "daemon" / "iochost.log"
    plugin_log = flood_daemon.data_dir / "logs" / "flood.log"
    assert flood_daemon.proc is not None
    daemon_pid = flood_daemon.proc.pid
    with flood_daemon.client() as api:
        response = api.post("/plugins", json={"name": "flood", "git_url": repo.url})
        assert response.status_code == 201, response.text
        worker = response.json()["pid"]
        cpu_before, started = cpu_seconds(daemon_pid), time.monotonic()
        rotated_while_running = False
        enough_mb = FLOOD_VOLUMES * ROTATE_BYTES * ROTATE_FILES / 2**20

        def flooded() -> float | None:
            """WRITTEN_MB once the flood wrote enough and two budget periods passed; checks
            the plugin's log files at every look on the way."""
            nonlocal rotated_while_running
            files = log_files(plugin_log)
            assert len(files) <= ROTATE_FILES, files
            assert all(size <= ROTATE_BYTES for size in files.values()), files
            rotated_while_running |= f"flood.log.{ROTATE_FILES - 1}" in files
            # throw=False: None while the client's channel, cached from an earlier daemon, reconnects
            written = ca.caget("IOCHT:FLOOD:WRITTEN_MB", timeout=5, throw=False)  # type: ignore[attr-defined]
            if not written.ok:
                return None
            periods = (time.monotonic() - started) / LOG_RATE[1]
            return written if written > enough_mb and periods >= 2 and rotated_while_running else None

        deadline = time.monotonic() + 120
        while (written_mb := flooded()) is None:  # not wait_for: a failed check on the way must fail now
            assert time.monotonic() < deadline, \
                f"in 120 s the flood did not write {enough_mb:.0f} MB or rotate (rotated: {rotated_while_running})"
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        daemon_cpu = (cpu_seconds(daemon_pid) - cpu_before) / elapsed

        tail = api.get("/plugins/flood/logs", params={"lines": 100}).json()
        record = api.get("/plugins/flood").json()
        assert api.delete("/plugins/flood").status_code == 200

    assert written_mb > enough_mb, f"only {written_mb:.0f} MB written"
    assert rotated_while_running, "the plugin's log never rotated while the worker ran"
    assert (record["pid"], record["restarts"]) == (worker, 0), "flooding is not a reason to restart"
    assert len(tail["lines"]) == 100

    daemon_files = log_files(daemon_log)
    assert 1 <= len(daemon_files) <= ROTATE_FILES
    assert sum(daemon_files.values()) <= ROTATE_BYTES * ROTATE_FILES
    text = "".join((daemon_log.parent / name).read_text(errors="replace") for name in daemon_files)
    forwarded = text.count("flood line")
    allowed = 2 * LOG_RATE[0] * (1 + elapsed / LOG_RATE[1])  # the daemon enforces twice the worker's rate
    assert 0 < forwarded <= allowed, (forwarded, allowed)
    assert "log lines not forwarded" in text
    print(f"flood: {written_mb:.0f} MB in {elapsed:.0f} s; daemon CPU {100 * daemon_cpu:.1f}% of a core; "
          f"{forwarded} lines forwarded")


# -- the pieces, as pure logic ----------------------------------------------------------------------
def test_rotating_file_never_exceeds_its_size_and_tail_reads_across_files(tmp_path: Path) -> None:
    from iochost.supervisor.logfiles import RotatingFile, remove, tail

    path = tmp_path / "p.log"
    log = RotatingFile(path, max_bytes=64 * 1024, files=3)
    for i in range(20_000):  # ~400 KB in writes of every size, one of them larger than a file
        log.write(f"line {i}\n".encode() * (1 if i != 5000 else 20_000))
    log.close()
    sizes = log_files(path)
    assert set(sizes) == {"p.log", "p.log.1", "p.log.2"}
    assert all(size <= 64 * 1024 for size in sizes.values()), sizes
    assert tail(path, 3, files=3) == ["line 19997", "line 19998", "line 19999"]
    current = path.read_text().count("\n")
    across = tail(path, current + 5, files=3)  # more than the current file holds: older files too
    assert across[-current - 5:][0].startswith("line ") and len(across) == current + 5
    (tmp_path / "p.log.notes").write_text("not a rotated log")
    remove(path)
    assert log_files(path) == {"p.log.notes": 17}


def test_line_budget_drops_past_the_rate_and_summarises_once_per_period() -> None:
    from iochost.budget import LineBudget

    budget = LineBudget(10, 2.0)
    allowed = [budget.allow(0.0) for _ in range(25)]
    assert allowed.count(True) == 10
    assert budget.summary(0.0) == 15
    assert not budget.allow(0.1) and budget.summary(0.5) is None  # one summary per period
    assert budget.allow(1.0)  # refilled at 5 lines/s
    assert budget.summary(2.1) == 1


def test_byte_throttle_spends_into_debt_and_says_how_long_to_wait() -> None:
    from iochost.budget import TokenBucket

    bucket = TokenBucket(4_000_000, 4.0)  # 1 MB/s, 4 s burst
    assert bucket.spend(0.0, 3_000_000) == 0.0
    assert bucket.spend(0.0, 3_000_000) == pytest.approx(2.0)  # 2 MB in debt at 1 MB/s
    assert bucket.spend(2.0, 0) == 0.0
