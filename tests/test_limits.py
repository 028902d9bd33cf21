"""A worker's limits (``config.limits``): resolved once, request -> parameters -> daemon, and each
limit's bound the same on every path that sets it: the POST body, config.yaml, the daemon's flag."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import daemon_environ
from iochost.config import Parameters
from sample_plugins import TICKER, make_plugin
from test_config import errors, only


def test_limits_resolve_request_then_parameters_then_daemon():
    from iochost.config.limits import DaemonLimits, resolve_limits

    daemon = DaemonLimits(grace_period=5.0, memory_limit_mb=1024, max_open_files=256)
    plain = resolve_limits(Parameters(), daemon)
    assert (plain.grace_period, plain.memory_limit_mb, plain.max_open_files, plain.watchdog) == (5.0, 1024, 256, 30.0)
    configured = resolve_limits(Parameters(grace_period=20, memory_limit_mb=128, max_open_files=64), daemon)
    assert (configured.grace_period, configured.memory_limit_mb, configured.max_open_files) == (20, 128, 64)
    assert resolve_limits(Parameters(grace_period=20), daemon, grace_period=40).grace_period == 40
    assert resolve_limits(Parameters(interval=10.0), daemon).watchdog == 100.0
    assert resolve_limits(Parameters(interval=10.0, watchdog=5), daemon).watchdog == 5.0
    assert resolve_limits(Parameters(), DaemonLimits(5.0, None, None)).memory_limit_mb is None


# -- a limit's bound is the same on every path that sets it (config.limits) ---------------------
# (parameter, a value out of range, the bound the refusal names, the daemon's flag or None)
OUT_OF_RANGE = [
    ("grace_period", 601, "600", "--grace-period"),
    ("memory_limit_mb", 10, "64", "--worker-memory-mb"),
    ("max_open_files", 2_000_000, "1048576", "--worker-max-files"),
    ("watchdog", 0, "greater than 0", None),
]


def test_limits_outside_the_daemon_and_for_the_probe():
    from iochost.config.limits import resolve_memory_limit
    from iochost.settings import Settings, limits_outside_daemon

    assert limits_outside_daemon().grace_period == Settings().grace_period  # the one default: the daemon's setting
    assert (limits_outside_daemon().memory_limit_mb, limits_outside_daemon().max_open_files) == (None, None)
    assert resolve_memory_limit(Parameters(memory_limit_mb=128), 1024) == 128  # the probe's, as the worker's
    assert resolve_memory_limit(Parameters(), 1024) == 1024
    assert resolve_memory_limit(None, 1024) == 1024  # config.yaml unreadable: the daemon's


@pytest.mark.parametrize("key, value, bound, flag", OUT_OF_RANGE)
def test_config_yaml_refuses_a_limit_out_of_range_at_its_line(tmp_path, key, value, bound, flag):
    issue = only(errors(tmp_path, f"parameters:\n  interval: 1\n  {key}: {value}\n"), f"parameters.{key}")
    assert issue.line == 3 and bound in issue.message, issue


@pytest.mark.parametrize("key, value, bound, flag", [case for case in OUT_OF_RANGE if case[3]])
def test_the_daemon_flag_refuses_a_limit_out_of_range(tmp_path, processes, key, value, bound, flag):
    serve = processes.start([sys.executable, "-m", "iochost", "serve", "--data-dir", str(tmp_path / "data"),
                             "--port", "0", flag, str(value)], env=daemon_environ(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, refusal = serve.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"iochost serve {flag} {value} started")  # the processes fixture kills its group
    assert serve.returncode == 2, refusal
    assert f"iochost serve: {flag[2:].replace('-', '_')}:" in refusal and bound in refusal, refusal
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("value, bound", [("601", "600"), ("0", "greater than 0"), ("nan", "600"),
                                          ("soon", "valid number")])
def test_iochost_run_refuses_a_grace_out_of_range(tmp_path, value, bound):
    """The fourth path that sets a grace period: ``iochost run --grace``, refused by argparse
    before anything starts, with the bound config.yaml's grace_period names."""
    plugin = make_plugin(tmp_path, "tick", TICKER, "parameters: {interval: 1.0}\n")
    run = subprocess.run([sys.executable, "-m", "iochost", "run", str(plugin), "--grace", value],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "argument --grace:" in run.stderr and bound in run.stderr, run.stderr


def test_the_daemon_flags_take_0_for_no_limit_of_their_own():
    from iochost.settings import Settings

    settings = Settings(worker_memory_mb=0, worker_max_files=0)
    assert (settings.worker_memory_mb, settings.worker_max_files) == (0, 0)


def test_the_post_body_refuses_a_limit_out_of_range(daemon, api, tmp_path):
    """The top-level grace_period (the request's own) and each limit in ``parameters``."""
    plugin = make_plugin(tmp_path, "bounded", TICKER, "pvs:\n  outputs:\n    VALUE: {type: int}\n")
    answer = api.post("/plugins", json={"name": "bounded", "local_path": str(plugin), "grace_period": 601})
    assert answer.status_code == 422, answer.text
    refused = {error["field"]: error["message"] for error in answer.json()["errors"]}
    assert "600" in refused["grace_period"], refused
    for key, value, bound, _ in OUT_OF_RANGE:
        answer = api.post("/plugins", json={"name": "bounded", "local_path": str(plugin),
                                            "parameters": {key: value}})
        assert answer.status_code == 422 and answer.json()["code"] == "VALIDATION_FAILED", answer.text
        messages = [error["message"] for error in answer.json()["errors"]]
        assert any(f"parameters.{key}" in message and bound in message for message in messages), messages
    assert api.get("/plugins/bounded").status_code == 404
