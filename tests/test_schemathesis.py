"""Property-based tests of the REST API against its own OpenAPI schema (schemathesis).

A real `iochost serve` with tokens, no local sources and an allow-list nobody's generated
URL matches, so generated adds fail fast and nothing long-running is ever started. Every
operation is exercised without a token, with the read token and with the admin token:
no 5xx, every status documented, every body and header as the schema says.

`positive_data_acceptance` is left out on purpose: the schema cannot say "exactly one of
git_url and local_path" or "a URL under the allow-list", so schema-valid bodies are
legitimately refused (403/422) by rules the schema does not express.
"""

from __future__ import annotations

import secrets
from typing import Any, Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from daemon_harness import Daemon, worker_pids
from iochost.api import create_app
from iochost.pvgateway.protocol import MAX_TIMEOUT
from iochost.settings import Settings

pytestmark = pytest.mark.slow

READ_TOKEN = "rd-" + secrets.token_hex(16)
ADMIN_TOKEN = "ad-" + secrets.token_hex(16)
EVENTS = "/api/v1/events"  # an endless stream: only without a token (401) or it never returns
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                    database=None)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("schemathesis") / "data", "--allow-source", "https://example.invalid/org/",
               "--add-rate", "off", "--git-timeout", "10", "--import-timeout", "10",
               env={"IOCHOST_READ_TOKEN": READ_TOKEN, "IOCHOST_ADMIN_TOKEN": ADMIN_TOKEN}, local_sources=False)
    try:
        yield d.start()
        assert "Traceback" not in d.log() and "unhandled error" not in d.log()
        assert d.terminate() == 0
    finally:
        d.cleanup()
        assert worker_pids(d.data_dir) == []


# The app's own schema, built in-process from the code under test (no supervisor starts);
# `test_schema_is_the_daemons` proves it is the very schema the running daemon serves.
APP_SCHEMA = create_app(Settings()).openapi()
schema = schemathesis.openapi.from_dict(APP_SCHEMA)


def test_schema_is_the_daemons(daemon: Daemon) -> None:
    served = httpx.get(daemon.url + "/openapi.json", timeout=10).json()
    assert served == APP_SCHEMA
    assert len([op for item in served["paths"].values() for op in item]) >= 15


def check(case: Any, daemon: Daemon, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = case.body.get("timeout") if isinstance(case.body, dict) else None
    if isinstance(timeout, (int, float)) and 1 < timeout <= MAX_TIMEOUT:
        # a PV gateway get or put waits its whole valid timeout for a PV nobody serves:
        # kept at 1 s, within this call's time limit (an invalid one is left to be refused)
        case.body["timeout"] = 1
    excluded = [positive_data_acceptance]
    if case.query:
        # Unknown query parameters are ignored, as FastAPI and iocmng ignore them (an iocmng
        # script's extra `?type=` must keep working); the schema cannot say so. They are left
        # out, and a case that was negative for them alone is no longer a negative one.
        operation = APP_SCHEMA["paths"][case.path].get(case.method.lower(), {})
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        unknown = [name for name in case.query if name not in declared]
        for name in unknown:
            del case.query[name]
        if unknown:
            excluded.append(negative_data_rejection)
    case.call_and_validate(base_url=daemon.url, headers=headers, timeout=30, excluded_checks=excluded)


@schema.parametrize()
@SETTINGS
def test_without_token(case: Any, daemon: Daemon) -> None:
    check(case, daemon, None)


@schema.exclude(path=EVENTS).parametrize()
@SETTINGS
def test_with_read_token(case: Any, daemon: Daemon) -> None:
    check(case, daemon, READ_TOKEN)


@schema.exclude(path=EVENTS).parametrize()
@SETTINGS
def test_with_admin_token(case: Any, daemon: Daemon) -> None:
    check(case, daemon, ADMIN_TOKEN)
