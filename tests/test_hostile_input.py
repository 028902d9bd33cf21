"""A hostile plugin's files cannot hurt the daemon: bounded parsing, bounded reads, and
every code-reading stage in the memory-limited probe. Real daemon, real git repositories;
the parser limits are also checked directly, as pure logic."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from daemon_harness import Daemon, wait_until
from gitrepos import Repo
from iochost.config.yaml_lines import MAX_ALIASES, MAX_DEPTH, MAX_NODES, YamlLimitError, parse_yaml
from iochost.untrusted import (
    MAX_CONFIG_BYTES,
    MAX_REQUIREMENTS_BYTES,
    MAX_SOURCE_BYTES,
    UntrustedFileError,
    read_bounded,
    read_tail,
)
from sample_plugins import BILLION_LAUGHS, DEEP_BLOCK, DEEP_FLOW, OVERSIZE_CONFIG, TICKER, TICKER_CONFIG


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# -- the parser's limits, as pure logic -----------------------------------------------------------
@pytest.mark.parametrize("text, limit", [
    (BILLION_LAUGHS, "node limit"),
    (DEEP_FLOW, "depth limit"),
    (DEEP_BLOCK, "depth limit"),
    ("base: &b [1]\n" + "".join(f"k{i}: *b\n" for i in range(MAX_ALIASES + 1)), "aliases per file"),
    ("loop: &l [1, *l]\n", "recursive alias"),
])
def test_yaml_limits_refuse_bombs_quickly_with_the_limit_named(text: str, limit: str) -> None:
    started = time.process_time()
    with pytest.raises(YamlLimitError) as caught:
        parse_yaml(text)
    assert limit in str(caught.value)
    assert caught.value.line is not None
    assert time.process_time() - started < 5  # CPU seconds: the expansion is never walked


@pytest.mark.slow
def test_yaml_within_limits_keeps_anchors_lines_and_duplicates() -> None:
    text = ("float: &f {type: float, prec: 2}\n"
            "pvs:\n  outputs:\n    A: *f\n    B: *f\n"
            "deep: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
            "deep: 1\n")
    doc = parse_yaml(text)
    assert doc.data["pvs"]["outputs"]["B"] == {"type": "float", "prec": 2}
    assert doc.lines[("pvs", "outputs", "B")] == 5
    assert doc.duplicates == [(("deep",), 7, 6)]
    wide = "items: [" + ", ".join(["1"] * (MAX_NODES - 10)) + "]\n"
    assert len(parse_yaml(wide).data["items"]) == MAX_NODES - 10


# -- bounded reads of plugin files ------------------------------------------------------------------
def test_read_bounded_refuses_escapes_devices_fifos_and_oversize(tmp_path: Path) -> None:
    root = tmp_path / "plugin"
    root.mkdir()
    (root / "ok.yaml").write_text("a: 1\n")
    (root / "alias.yaml").symlink_to("ok.yaml")
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "zero").symlink_to("/dev/zero")
    os.mkfifo(root / "fifo")
    (root / "big").write_bytes(b"x" * 1001)

    assert read_bounded(root, "ok.yaml", 100) == b"a: 1\n"
    assert read_bounded(root, "alias.yaml", 100) == b"a: 1\n"  # a symlink inside the plugin is fine
    with pytest.raises(UntrustedFileError, match="outside the plugin directory"):
        read_bounded(root, "passwd", 10_000)
    with pytest.raises(UntrustedFileError, match="outside the plugin directory"):
        read_bounded(root, "zero", 10_000)
    with pytest.raises(UntrustedFileError, match="not a regular file"):
        read_bounded(root, "fifo", 10_000)  # and it returns: no writer is waited for
    with pytest.raises(UntrustedFileError, match="the limit is 1000 bytes"):
        read_bounded(root, "big", 1000)


def test_read_tail_keeps_whole_lines_of_the_end(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_text("".join(f"line {i} secret-token-{i}\n" for i in range(10_000)))
    tail = read_tail(path, 1000)
    assert tail.endswith("line 9999 secret-token-9999\n")
    assert len(tail) <= 1000
    assert tail.startswith("line ")  # never half a line, so never half a secret to scrub


# -- against the daemon ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("hostile")
    with Daemon(root / "data").serving() as daemon:
        yield daemon


@pytest.fixture(scope="module")
def client(hostile_daemon: Daemon) -> Iterator[httpx.Client]:
    with hostile_daemon.client(timeout=60) as c:  # a bomb that is not refused fails here
        yield c


def assert_nothing_left(daemon: Daemon, api: httpx.Client, name: str) -> None:
    assert api.get(f"/plugins/{name}").status_code == 404
    assert not (daemon.data_dir / "plugins" / name).exists()
    assert not list((daemon.data_dir / "logs").glob(f"{name}.log*"))
    registry = daemon.data_dir / "registry.json"
    assert not registry.exists() or name not in registry.read_text()


def post_hostile(daemon: Daemon, api: httpx.Client, repos: Path, name: str, files: dict[str, str]) -> dict[str, Any]:
    repo = Repo(repos / name).write(files)
    repo.commit()
    assert daemon.proc is not None
    before = rss_kb(daemon.proc.pid)
    response = api.post("/plugins", json={"name": name, "git_url": repo.url})
    growth_mb = (rss_kb(daemon.proc.pid) - before) / 1024
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "VALIDATION_FAILED"
    assert growth_mb < 20, f"daemon RSS grew by {growth_mb:.0f} MB"
    assert_nothing_left(daemon, api, name)
    return body


@pytest.mark.slow
@pytest.mark.parametrize("name, config, limit", [
    ("laughs", BILLION_LAUGHS, "node limit"),
    ("nested", DEEP_FLOW, "depth limit"),
    ("oversize", OVERSIZE_CONFIG, f"the limit is {MAX_CONFIG_BYTES // 1024} KiB"),
])
def test_config_bombs_are_a_422_at_stage_config_and_the_daemon_does_not_grow(
        hostile_daemon: Daemon, client: httpx.Client, repos: Path, name: str, config: str, limit: str) -> None:
    body = post_hostile(hostile_daemon, client, repos, name, {"bomb.py": TICKER, "config.yaml": config})
    config_errors = [e for e in body["errors"] if e["stage"] == "config"]
    assert config_errors and config_errors[0]["file"] == "config.yaml", body
    assert limit in config_errors[0]["message"]


def test_config_symlinked_out_of_the_checkout_is_refused(
        hostile_daemon: Daemon, client: httpx.Client, repos: Path) -> None:
    repo = Repo(repos / "linked").write({"linked.py": TICKER})
    (repo.path / "config.yaml").symlink_to("/etc/passwd")
    repo.commit()
    response = client.post("/plugins", json={"name": "linked", "git_url": repo.url})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "INVALID_REQUEST"  # the store refuses it before anything reads it
    assert "config.yaml is a symlink pointing outside the repository" in body["message"]
    assert "root:" not in response.text  # nothing of the target is echoed
    assert_nothing_left(hostile_daemon, client, "linked")


def test_python_file_over_the_limit_is_a_syntax_error_naming_it(
        hostile_daemon: Daemon, client: httpx.Client, repos: Path) -> None:
    generated = "TABLE = [\n" + "    1,\n" * (MAX_SOURCE_BYTES // 6) + "]\n"
    body = post_hostile(hostile_daemon, client, repos, "generated",
                        {"plugin.py": TICKER, "table.py": generated, "config.yaml": TICKER_CONFIG})
    assert body["errors"][0]["stage"] == "syntax"
    assert body["errors"][0]["file"] == "table.py"
    assert "the limit is 1.0 MiB" in body["errors"][0]["message"]


def test_parser_exhausting_code_is_reported_from_the_probe(
        hostile_daemon: Daemon, client: httpx.Client, repos: Path) -> None:
    """Parsed in the daemon, this would recurse until the interpreter gives up; in the probe
    it is one syntax finding."""
    body = post_hostile(hostile_daemon, client, repos, "chain",
                        {"plugin.py": TICKER, "chain.py": "X = " + " + ".join(["1"] * 150_000) + "\n",
                         "config.yaml": TICKER_CONFIG})
    assert [(e["stage"], e["file"]) for e in body["errors"]] == [("syntax", "chain.py")], body
    assert "nested too deeply" in body["errors"][0]["message"]


def test_requirements_over_the_limit_is_refused_before_pip(
        hostile_daemon: Daemon, client: httpx.Client, repos: Path) -> None:
    requirements = "".join(f"package-{i}\n" for i in range(MAX_REQUIREMENTS_BYTES // 10))
    body = post_hostile(hostile_daemon, client, repos, "reqs",
                        {"reqs.py": TICKER, "config.yaml": TICKER_CONFIG, "requirements.txt": requirements})
    assert body["errors"][0]["stage"] == "requirements"
    assert "requirements.txt is" in body["errors"][0]["message"]


def test_a_good_plugin_still_adds_after_the_hostile_ones(
        hostile_daemon: Daemon, client: httpx.Client, repos: Path) -> None:
    repo = Repo(repos / "fine").write({"fine.py": TICKER, "config.yaml": TICKER_CONFIG})
    repo.commit()
    response = client.post("/plugins", json={"name": "fine", "git_url": repo.url})
    assert response.status_code == 201, response.text
    assert client.get("/health").json()["status"] == "ok"


def test_event_decoder_skips_bad_and_overlong_lines_and_keeps_the_rest() -> None:
    from iochost.contract import messages

    problems: list[str] = []
    decoder = messages.event_decoder(problems.append)
    good = messages.encode(messages.StatusChanged(status="RUN"))
    fed = decoder.feed(b"not json\n" + good + b'{"type": "nope"}\n' + good)
    assert fed == [messages.StatusChanged(status="RUN")] * 2
    assert len(problems) == 2
    for _ in range(3):  # a line without end, fed in pieces: the buffer never holds it all
        assert decoder.feed(b"x" * (messages.MAX_LINE // 2 + 1)) == []
    assert len(decoder._buffer) <= messages.MAX_LINE
    assert decoder.feed(b"tail of the long line\n" + good) == [messages.StatusChanged(status="RUN")]
    assert problems[2] == f"message line over {messages.MAX_LINE} bytes dropped" and len(problems) == 3


BIG_RESULT_JOB = """
    from iochost import JobBase, JobResult

    class Big(JobBase):
        def initialize(self):
            pass

        def execute(self):
            size = int(self.parameters["size"])
            return JobResult(success=True, data={"blob": "x" * size}, message="done")
"""


def test_a_job_result_too_large_to_keep_is_a_failed_run_saying_so(
        hostile_daemon: Daemon, client: httpx.Client, repos: Path) -> None:
    from iochost.supervisor.runs import MAX_RESULT_BYTES

    repo = Repo(repos / "big").write({"big.py": BIG_RESULT_JOB, "config.yaml": "parameters: {size: 10}\n"})
    repo.commit()
    assert client.post("/plugins", json={"name": "big", "git_url": repo.url}).status_code == 201
    small = client.post("/jobs/big/run", json={"parameters": {"size": 1000}}).json()
    assert (small["state"], small["result"]["data"]["blob"]) == ("succeeded", "x" * 1000)
    big = client.post("/jobs/big/run", json={"parameters": {"size": 2 * MAX_RESULT_BYTES}}).json()
    assert big["state"] == "failed"
    assert big["result"]["success"] is False and "not kept: the limit is 256 KiB" in big["result"]["message"]
    assert client.post("/jobs/big/run", json={"parameters": {"size": 5}}).json()["state"] == "succeeded"
    assert client.delete("/plugins/big").status_code == 200


JUNK_WRITER = """
    import json, os, sys
    from iochost import TaskBase

    BAD_RESULT = b'{"type": "run_finished", "run_id": "x", "outcome": "succeeded", "result": {"success": []}}'

    class Junk(TaskBase):
        def initialize(self):
            with open(sys.argv[1]) as spec:  # the worker's spec names the event pipe
                self.fd = json.load(spec)["event_fd"]

        def execute(self):
            os.write(self.fd, b"junk that is not a message\\n" * 50 + BAD_RESULT + b"\\n")
            self.set_pv("VALUE", 1)

        def cleanup(self):
            pass
"""


@pytest.mark.slow
def test_junk_on_the_event_pipe_is_dropped_and_logged_sparingly(
        hostile_daemon: Daemon, client: httpx.Client, repos: Path) -> None:
    config = "parameters: {interval: 0.1}\npvs: {outputs: {VALUE: {type: int}}}\n"
    repo = Repo(repos / "junk").write({"junk.py": JUNK_WRITER, "config.yaml": config})
    repo.commit()
    response = client.post("/plugins", json={"name": "junk", "git_url": repo.url})
    assert response.status_code == 201, response.text
    # some 2000 junk lines later (51 a cycle): counted by the worker's own heartbeats
    record = wait_until(lambda: ((r := client.get("/plugins/junk").json())["cycle_count"] or 0) >= 40 and r,
                        timeout=60, what="40 cycles of junk")
    assert (record["state"], record["restarts"], record["pid"]) == ("running", 0, response.json()["pid"])
    assert client.get("/health").json()["status"] == "ok"
    logged = [line for line in hostile_daemon.log().splitlines() if "junk: from worker" in line]
    assert 1 <= len(logged) <= 10, logged[:20]
    assert client.delete("/plugins/junk").status_code == 200
