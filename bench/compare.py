"""iocmng 2.7.9 and iochost side by side on this machine, as one markdown table with ratios.

    .venv/bin/python bench/compare.py [--plugins 1,20,100] [--no-iocmng] [--runs 5] [--json out.json]

Both run the same plugin (``from iocmng import TaskBase``, a 1 Hz task with three PVs of its
own) from the same local git repository by ``file://`` URL, everything on loopback with free
ports and temp dirs. iocmng comes from PyPI into its own venv (cached in
/tmp/iochost-bench-iocmng). Figures:

1. POST -> 201 (iocmng: 200 with ``ok: true``): median of --runs adds. iochost adds, deletes
   and re-adds under a new name in one daemon; iocmng cannot add a second plugin after its
   first ``iocInit``, so each of its adds is the first plugin of a fresh server.
2. POST -> first CA read: from sending the POST until the plugin's READING PV, found by a
   CA search of the server's search port, has been read with libca (same adds as 1),
   polled from a process of its own (``ca_first_read.py``).
3. GET /api/v1/plugins with ``wrk -t1 -c8 -d10s`` (or a Python client): req/s and p99, at 1
   plugin for both and at every --plugins count for iochost.
4. PSS (/proc/PID/smaps_rollup): median over the worker processes and total over the daemon
   and all its descendants; VmLck of the workers.
5. Restart with N plugins registered (same data dir): from starting the server until
   /api/v1/health/live (where it exists) or /api/v1/health answers 200, and until every
   plugin is "running".
6. Idle CPU of the server's whole process tree over a 10 s window, % of one core.

The runs are ``compare_scenarios.py`` (on the measurements of ``compare_measures.py``), the
machine line and the table ``compare_report.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpload
from benchdaemon import git_repo
from compare_report import machine, markdown, print_log_tails, rows
from compare_scenarios import PLUGIN_FILES, bench_iochost, bench_iocmng


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM/SIGHUP end the run like Ctrl-C, so every ``finally`` stops what it started."""
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", default="1,20,100", help="comma-separated plugin counts for iochost")
    parser.add_argument("--runs", type=int, default=5, help="adds timed for figures 1 and 2")
    parser.add_argument("--no-iocmng", action="store_true", help="iochost figures only")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir (logs) for a look")
    args = parser.parse_args()
    counts = sorted({int(c) for c in args.plugins.split(",") if c.strip()})
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    # This process's own CA client (caproto) never searches beyond loopback.
    os.environ.update(EPICS_CA_AUTO_ADDR_LIST="NO", EPICS_CA_ADDR_LIST="127.0.0.1",
                      EPICS_PVA_AUTO_ADDR_LIST="NO", EPICS_PVA_ADDR_LIST="127.0.0.1")
    httpload.ensure_wrk()
    info = machine()
    began = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="iochost-compare-"))
    try:
        git_url = git_repo(scratch / "repo", PLUGIN_FILES)
        iocmng = None
        if not args.no_iocmng:
            print("iocmng ...", file=sys.stderr)
            iocmng = bench_iocmng(scratch, git_url, args.runs)
        print("iochost ...", file=sys.stderr)
        iochost = bench_iochost(scratch, git_url, counts, args.runs)
    except BaseException:
        print_log_tails(scratch)
        raise
    finally:
        if args.keep:
            print(f"scratch kept: {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    info["duration_s"] = round(time.perf_counter() - began, 1)
    table = rows(iochost, iocmng, counts)
    print(f"\nmachine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gb']} GB RAM, kernel {info['kernel']}, "
          f"Python {info['python']}, load average at start {info['loadavg_at_start'][0]:.2f}; "
          f"iochost {info['iochost_commit']}; GET load: {info['load_tool']}; run took {info['duration_s']:.0f} s\n")
    print(markdown(table))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "iocmng": iocmng, "iochost": iochost,
                                         "table": [row.__dict__ for row in table]}, indent=2))


if __name__ == "__main__":
    main()
