"""What bench/compare.py measures of a server, iocmng's or iochost's: an add timed to its answer
and to the first CA read of its PV, PSS and locked memory, idle CPU of the whole process tree,
a restart timed to the API and to every plugin running, GET load.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpload
from benchdaemon import proc_status_kb, process_tree, pss_kb, tree_cpu_seconds

LOAD_SECONDS = 10.0
IDLE_SECONDS = 10.0


def timed_add(url: str, body: dict[str, Any], accepted: Callable[[httpx.Response], bool], pv: str,
              ca_port: int, timeout: float = 120) -> tuple[float, float]:
    """Seconds from sending the POST to its answer, and to the first successful CA read of ``pv``.

    The POST runs in a thread of this process; the CA reads are polled by a separate
    process (``ca_first_read``), started and imported before the clock starts, so that
    neither waits for the other's GIL. The HTTP client too is made before the clock:
    building an httpx client (an SSL context with the CA bundle) takes 25-50 ms, which is
    the client's cost, not the server's.
    """
    answer: dict[str, Any] = {}
    client = httpx.Client(timeout=timeout)
    poller = subprocess.Popen([sys.executable, str(Path(__file__).with_name("ca_first_read.py")), pv,
                               str(ca_port), str(timeout)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert poller.stdin is not None and poller.stdout is not None

    def post() -> None:
        try:
            response = client.post(url, json=body)
            answer["response"] = response
        except Exception as exc:  # noqa: BLE001 - reported below
            answer["error"] = exc
        answer["at"] = time.perf_counter()

    try:
        if poller.stdout.readline().strip() != "ready":
            raise RuntimeError("the CA poller did not start")
        thread = threading.Thread(target=post, daemon=True)
        start = time.perf_counter()
        poller.stdin.write("go\n")
        poller.stdin.flush()
        thread.start()
        thread.join(timeout)
        if "error" in answer:
            raise RuntimeError(f"POST {url} failed: {answer['error']}")
        response = answer["response"]
        if not accepted(response):
            raise RuntimeError(f"POST {url} answered {response.status_code}: {response.text[:500]}")
        read_at = poller.stdout.readline().strip()
        if read_at in ("", "timeout"):
            raise RuntimeError(f"{pv} never answered a CA read")
        return answer["at"] - start, float(read_at) - start
    finally:
        client.close()
        poller.kill()
        poller.wait()


def idle_cpu_pct(pid: int, seconds: float = IDLE_SECONDS) -> float:
    """CPU of ``pid``'s whole tree over a window, % of one core (a process born inside counts fully)."""
    before = tree_cpu_seconds(pid)
    time.sleep(seconds)
    after = tree_cpu_seconds(pid)
    return 100 * sum(cpu - before.get(p, 0.0) for p, cpu in after.items()) / seconds


def memory(daemon_pid: int, worker_pids: list[int]) -> dict[str, Any]:
    """PSS of the workers (median, max) and of the whole tree; VmLck of the workers (max)."""
    tree = process_tree(daemon_pid)
    total = 0
    for pid in tree:
        with contextlib.suppress(OSError):
            total += pss_kb(pid)
    pss = [pss_kb(pid) / 1024 for pid in worker_pids]
    locked = [proc_status_kb(pid, "VmLck") / 1024 for pid in worker_pids]
    return {"processes": len(tree), "total_pss_mb": total / 1024,
            "worker_pss_median_mb": statistics.median(pss) if pss else None,
            "worker_pss_max_mb": max(pss) if pss else None,
            "worker_vmlck_median_mb": statistics.median(locked) if locked else None,
            "worker_vmlck_max_mb": max(locked) if locked else None}


def get_200(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def wait_restarted(proc: subprocess.Popen[bytes], url: str, expected: int, running: Callable[[dict[str, Any]], bool],
                   liveness: list[str], timeout: float = 300) -> dict[str, Any]:
    """After a (re)start at t=0: seconds until a liveness path answers 200, and until
    GET /plugins lists ``expected`` plugins all running. Call right after Popen."""
    start = time.perf_counter()
    result: dict[str, Any] = {}
    with httpx.Client(base_url=url) as client:
        while "api_s" not in result:
            for path in liveness:
                if get_200(client, path):
                    result.update(api_s=time.perf_counter() - start, api_path="/api/v1" + path)
                    break
            else:
                if time.perf_counter() - start > timeout or proc.poll() is not None:
                    raise RuntimeError(f"{url} did not answer {liveness} within {timeout} s "
                                       f"(exit code {proc.poll()})")
                time.sleep(0.01)
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                plugins = client.get("/plugins", timeout=5).json()["plugins"]
                if len(plugins) == expected and all(running(p) for p in plugins):
                    result["all_running_s"] = time.perf_counter() - start
                    return result
            if time.perf_counter() - start > timeout or proc.poll() is not None:
                raise RuntimeError(f"not all {expected} plugins running within {timeout} s (exit code {proc.poll()})")
            time.sleep(0.02)


def load(url: str) -> dict[str, Any]:
    return httpload.measure(url, connections=8, seconds=LOAD_SECONDS).as_dict()
