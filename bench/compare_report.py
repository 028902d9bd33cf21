"""bench/compare.py's report: the machine the numbers were measured on, and the markdown
table of iocmng's and iochost's figures with their ratios and the goals they are checked against.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import iocmngserver
from benchdaemon import ROOT


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and how busy it already was."""
    meminfo = Path("/proc/meminfo").read_text().split()
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    wrk = shutil.which("wrk")
    return {"nproc": os.cpu_count(), "ram_gb": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1),
            "cpu": model, "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(), "iochost_commit": commit,
            "load_tool": "wrk -t1 -c8 -d10s" if wrk else "python raw-socket client, 8 connections, 10 s"}


@dataclass
class Row:
    figure: str
    iocmng: float | None
    iochost: float | None
    unit: str
    goal: str = ""
    met: bool | None = None
    ratio: bool = True


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:.{digits}f} {unit}".strip()


def _n(count: int) -> str:
    return f"{count} plugin" if count == 1 else f"{count} plugins"


def _get(results: dict[str, Any] | None, count: int, *keys: str) -> float | None:
    node: Any = (results or {}).get("at", {}).get(str(count))
    for key in keys:
        if node is None:
            return None
        node = node.get(key)
    return node


def rows(iochost: dict[str, Any], iocmng: dict[str, Any] | None, counts: list[int]) -> list[Row]:
    """The table, with the goals this benchmark exists to check."""
    def median(results: dict[str, Any] | None, key: str) -> float | None:
        return statistics.median(a[key] for a in results["adds"]) if results and results["adds"] else None

    def check(value: float | None, ok: Callable[[float], bool]) -> bool | None:
        return None if value is None else ok(value)

    out: list[Row] = []
    post_m, post_h = median(iocmng, "post_s"), median(iochost, "post_s")
    out.append(Row(f"POST → 201 (iocmng: 200 ok), median of {len(iochost['adds'])} adds", post_m, post_h, "s",
                   "≤ 0.65× iocmng",
                   None if post_m is None or post_h is None else post_h <= 0.65 * post_m))
    ca_h = median(iochost, "first_ca_read_s")
    out.append(Row("POST → first CA read, median", median(iocmng, "first_ca_read_s"), ca_h, "s", "≤ 0.7 s",
                   check(ca_h, lambda v: v <= 0.7)))
    rate_m, rate_h = _get(iocmng, 1, "load", "requests_per_s"), _get(iochost, 1, "load", "requests_per_s")
    if 1 in counts:
        out.append(Row("GET /plugins, 1 plugin", rate_m, rate_h, "req/s", "≥ 2× iocmng and ≥ 3000 req/s",
                       None if rate_h is None else rate_h >= 3000 and (rate_m is None or rate_h >= 2 * rate_m)))
        out.append(Row("GET /plugins p99, 1 plugin", _get(iocmng, 1, "load", "p99_ms"),
                       _get(iochost, 1, "load", "p99_ms"), "ms"))
    for count in (c for c in counts if c > 1):
        out.append(Row(f"GET /plugins, {_n(count)}", None, _get(iochost, count, "load", "requests_per_s"),
                       "req/s"))
        p99 = _get(iochost, count, "load", "p99_ms")
        goal = "≤ 20 ms" if count == 100 else ""
        out.append(Row(f"GET /plugins p99, {_n(count)}", None, p99, "ms", goal,
                       check(p99, lambda v: v <= 20) if goal else None))
    for count in counts:
        pss = _get(iochost, count, "memory", "worker_pss_median_mb")
        goal = "≤ 30 MB" if count == 20 else ""
        out.append(Row(f"PSS median per worker, {_n(count)}", None, pss, "MB", goal,
                       check(pss, lambda v: v <= 30) if goal else None))
    for count in counts:
        total = _get(iochost, count, "memory", "total_pss_mb")
        goal = "≤ 3.5 GB" if count == 100 else ""
        out.append(Row(f"total PSS (server + descendants), {_n(count)}",
                       _get(iocmng, count, "memory", "total_pss_mb"), total, "MB", goal,
                       check(total, lambda v: v <= 3.5 * 1024) if goal else None))
    for count in counts:
        out.append(Row(f"VmLck per worker (max), {_n(count)}", None,
                       _get(iochost, count, "memory", "worker_vmlck_max_mb"), "MB", ratio=False))
    for count in counts:
        api = _get(iochost, count, "restart", "api_s")
        out.append(Row(f"restart → API ({_get(iochost, count, 'restart', 'api_path') or '-'}), {_n(count)}",
                       _get(iocmng, count, "restart", "api_s"), api, "s", "≤ 1 s", check(api, lambda v: v <= 1)))
        running = _get(iochost, count, "restart", "all_running_s")
        limit = {20: 8.0, 100: 20.0}.get(count)
        out.append(Row(f"restart → all running, {_n(count)}", _get(iocmng, count, "restart", "all_running_s"),
                       running, "s", f"≤ {limit:g} s" if limit else "",
                       None if limit is None or running is None else running <= limit))
    for count in counts:
        cpu = _get(iochost, count, "idle_cpu_pct")
        goal = "≤ 25 %" if count == 100 else ""
        out.append(Row(f"idle CPU of the tree, {_n(count)}", _get(iocmng, count, "idle_cpu_pct"), cpu,
                       "% core", goal, check(cpu, lambda v: v <= 25) if goal else None))
    return out


def markdown(table: list[Row]) -> str:
    lines = [f"| figure | iocmng {iocmngserver.IOCMNG_VERSION} | iochost | ratio | goal | met |",
             "|---|---|---|---|---|---|"]
    for row in table:
        ratio = (f"{row.iochost / row.iocmng:.2f}×" if row.ratio and row.iocmng and row.iochost is not None
                 else "")
        met = {True: "yes", False: "**NO**", None: ""}[row.met]
        lines.append(f"| {row.figure} | {_fmt(row.iocmng, row.unit)} | {_fmt(row.iochost, row.unit)} | {ratio} "
                     f"| {row.goal} | {met} |")
    return "\n".join(lines)


def print_log_tails(scratch: Path, lines: int = 15) -> None:
    """The servers' logs end where a failure is explained; shown before the scratch dir goes."""
    for log in sorted(scratch.glob("*/*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        if tail:
            print(f"--- {log.relative_to(scratch)} (last {len(tail)} lines)", *tail, sep="\n", file=sys.stderr)
