"""docs/tutorial.md, followed as a newcomer follows it: every shell block run in order in a new
directory, by bash, with the iochost under test on PATH; nothing the page does is skipped.

How the page's blocks are read (the page's HTML comments are invisible on the site):
- a ``bash`` block runs in the work terminal: one shell state (variables, directory) carried
  from block to block, and it must exit 0;
- a ``bash`` block after ``<!-- test: background, ready when the output has "TEXT" -->`` is the
  server terminal's command: started in the background, and the page goes on once TEXT is in its
  output; ``<!-- test: ctrl-c -->`` is the reader's Ctrl-C there: SIGINT, and it must exit 0;
- a ``text`` block right after a ``bash`` block is that block's output: each line must be in it;
- any other block has ``title="PATH"``: an excerpt of that file as the commands left it.

The changes made to the page's text, as its note says: the REST address ``localhost:8080``
becomes a free port, and the package installed is a wheel built from this checkout
(``release_build``) instead of GitHub's, its dependencies from the package index as a reader
gets them. The EPICS ports (5064 and PVA's) come from free ports through the standard
``EPICS_CA_SERVER_PORT``/``EPICS_PVA_*`` variables, which ``iochost run``, ``iochost serve`` and
the CA client tools all read, so the page's commands run as written and no test collides with
another. The reader starts with no iochost on PATH: the page installs it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Processes, free_port, free_port_block, release_ports, wait_for
from release_build import build_release

PAGE = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"
FENCE = re.compile(r"^```(?P<lang>\w+)(?P<attrs>[^\n]*)$")
TITLE = re.compile(r'title="(?P<path>[^"]+)"')
BACKGROUND = re.compile(r'^<!-- test: background, ready when the output has "(?P<ready>[^"]+)" -->$')
CTRL_C = "<!-- test: ctrl-c -->"
REST = "localhost:8080"
PACKAGE = "iochost @ git+https://github.com/iochost/iochost"


@dataclass(frozen=True)
class Step:
    """One thing the reader does: ``kind`` is run, background, ctrl-c, output or excerpt."""

    kind: str
    line: int  # where on the page, for the failure message
    text: str = ""
    detail: str = ""  # background: the ready text; excerpt: the file's path


def steps(page: str) -> list[Step]:
    """The page's blocks and markers, in order; a block the rules above do not cover fails."""
    found: list[Step] = []
    lines = page.splitlines()
    index = 0
    marker: re.Match[str] | None = None
    while index < len(lines):
        line = lines[index]
        if line == CTRL_C:
            found.append(Step("ctrl-c", index + 1))
        elif (match := BACKGROUND.match(line)) is not None:
            marker = match
        elif (fence := FENCE.match(line)) is not None:
            end = lines.index("```", index + 1)
            body = "\n".join(lines[index + 1:end]) + "\n"
            lang, title = fence["lang"], TITLE.search(fence["attrs"])
            if lang == "bash" and marker is not None:
                found.append(Step("background", index + 1, body, marker["ready"]))
            elif lang == "bash":
                found.append(Step("run", index + 1, body))
            elif lang == "text" and found and found[-1].kind == "run":
                found.append(Step("output", index + 1, body))
            elif title is not None:
                found.append(Step("excerpt", index + 1, body, title["path"]))
            else:
                raise AssertionError(f"tutorial.md:{index + 1}: a {lang} block the test cannot check")
            marker = None
            index = end
        index += 1
    return found


class Reader:
    """The reader's two terminals: one shell state for the work terminal, one background process."""

    def __init__(self, directory: Path, env: dict[str, str], rest_port: int, wheel: Path,
                 processes: Processes) -> None:
        self.directory = directory
        self.env = env
        self.rest_port = rest_port
        self.wheel = wheel
        self.processes = processes
        self.state = directory.parent / "shell-state"  # `export -p` and the directory, block to block
        self.state.write_text(f"cd {shlex.quote(str(directory))}\n")
        self.server: subprocess.Popen[bytes] | None = None
        self.server_log = directory.parent / "server-terminal.log"
        self.last_output = ""

    def as_written(self, text: str) -> str:
        return text.replace(REST, f"127.0.0.1:{self.rest_port}").replace(PACKAGE, f"iochost @ {self.wheel.as_uri()}")

    def run(self, step: Step) -> None:
        script = (f"set -eo pipefail\nsource {shlex.quote(str(self.state))}\n{self.as_written(step.text)}"
                  f"{{ export -p; echo cd \"$(printf %q \"$PWD\")\"; }} > {shlex.quote(str(self.state))}\n")
        done = subprocess.run(["bash", "-c", script], env=self.env, capture_output=True, text=True, timeout=300)
        self.last_output = done.stdout + done.stderr
        assert done.returncode == 0, (f"tutorial.md:{step.line} exited {done.returncode}:\n{step.text}\n"
                                      f"{self.last_output}\nserver terminal:\n{self.server_output()}")

    def background(self, step: Step) -> None:
        assert self.server is None or self.server.poll() is not None, \
            f"tutorial.md:{step.line}: the server terminal still runs the last command (no ctrl-c before)"
        command = self.as_written(step.text).strip()
        assert "\n" not in command, f"tutorial.md:{step.line}: a server terminal block is one command"
        script = f"source {shlex.quote(str(self.state))}\nexec {command}\n"
        with open(self.server_log, "wb") as log:
            self.server = self.processes.start(["bash", "-c", script], env=self.env, stdout=log,
                                               stderr=subprocess.STDOUT)
        server = self.server
        wait_for(lambda: step.detail in self.server_output() or server.poll() is not None, timeout=90,
                 what=f"tutorial.md:{step.line}: {step.detail!r} from {command!r}")
        assert server.poll() is None, f"tutorial.md:{step.line}: {command!r} exited:\n{self.server_output()}"

    def ctrl_c(self, step: Step) -> None:
        assert self.server is not None and self.server.poll() is None, \
            f"tutorial.md:{step.line}: Ctrl-C with nothing running in the server terminal"
        self.server.send_signal(signal.SIGINT)
        code = self.server.wait(timeout=60)
        assert code == 0, f"tutorial.md:{step.line}: Ctrl-C ended the server with {code}:\n{self.server_output()}"

    def output(self, step: Step) -> None:
        for line in step.text.splitlines():
            assert line.strip() in self.last_output, \
                f"tutorial.md:{step.line}: {line!r} is not in the output:\n{self.last_output}"

    def excerpt(self, step: Step) -> None:
        path = self.directory / step.detail
        assert path.is_file(), f"tutorial.md:{step.line}: {step.detail} does not exist"
        assert step.text in path.read_text(), \
            f"tutorial.md:{step.line}: the excerpt is not in {step.detail}:\n{path.read_text()}"

    def server_output(self) -> str:
        return self.server_log.read_text(errors="replace") if self.server_log.exists() else ""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_release(tmp_path_factory.mktemp("release")).wheel


def without_iochost(path: str) -> str:
    """``path`` without the directories that hold an ``iochost`` (this suite's venv, if active)."""
    return os.pathsep.join(d for d in path.split(os.pathsep) if d and not (Path(d) / "iochost").exists())


@pytest.fixture
def reader(tmp_path: Path, processes: Processes, wheel: Path) -> Iterator[Reader]:
    """A new empty directory and an environment as a reader's: no iochost on PATH yet, no
    IOCHOST_* or EPICS_* settings of the suite's, a git identity, and free ports."""
    low, high = free_port_block(40)
    middle = (low + high) // 2
    rest_port = free_port()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("EPICS_", "IOCHOST_")) and key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update({
        "PATH": without_iochost(env.get("PATH", "")),
        "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost",
        "GIT_AUTHOR_NAME": "Tutorial Reader", "GIT_AUTHOR_EMAIL": "reader@example.invalid",
        "GIT_COMMITTER_NAME": "Tutorial Reader", "GIT_COMMITTER_EMAIL": "reader@example.invalid",
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        # the ports the page's defaults would take, taken free instead
        "IOCHOST_PORT": str(rest_port),
        "IOCHOST_WORKER_PORTS": f"{low}-{middle}", "IOCHOST_WORKER_PVA_PORTS": f"{middle + 1}-{high}",
        "EPICS_CA_SERVER_PORT": str(free_port()), "EPICS_CA_REPEATER_PORT": str(free_port()),
        "EPICS_PVA_SERVER_PORT": str(free_port()), "EPICS_PVA_BROADCAST_PORT": str(free_port()),
    })
    assert shutil.which("iochost", path=env["PATH"]) is None
    directory = tmp_path / "work"
    directory.mkdir()
    try:
        yield Reader(directory, env, rest_port, wheel, processes)
    finally:
        release_ports(low, 40)


def test_the_page_is_all_checkable_blocks() -> None:
    """Every block of the page is one the test below runs or checks, and the page has the
    tutorial's milestones (so a page that lost them fails here, not silently)."""
    found = steps(PAGE.read_text())
    commands = "\n".join(step.text for step in found if step.kind in ("run", "background"))
    for milestone in (PACKAGE, "iochost new", "iochost validate", "iochost run", "git commit", "--allow-local-sources",
                      f"curl -s -X POST {REST}/api/v1/plugins", "caproto-put", "caproto-get", "display.bob",
                      "/upgrade", "-X DELETE"):
        assert milestone in commands, milestone
    kinds = [step.kind for step in found]
    assert kinds.count("background") == kinds.count("ctrl-c") == 2


@pytest.mark.slow
def test_every_block_of_the_tutorial_runs(reader: Reader) -> None:
    for step in steps(PAGE.read_text()):
        getattr(reader, step.kind.replace("-", "_"))(step)
    assert reader.server is not None and reader.server.poll() == 0  # the daemon stopped on Ctrl-C
    assert (reader.directory / "scaler.bob").read_text().startswith("<?xml")  # the panel downloaded


def test_steps_reads_markers_and_refuses_unknown_blocks() -> None:
    page = textwrap.dedent("""\
        <!-- test: background, ready when the output has "up" -->
        ```bash
        server
        ```
        ```bash
        echo hi
        ```
        ```text
        hi
        ```
        ```yaml title="a/b.yaml"
        k: v
        ```
        <!-- test: ctrl-c -->
        """)
    assert [(s.kind, s.text, s.detail) for s in steps(page)] == [
        ("background", "server\n", "up"), ("run", "echo hi\n", ""), ("output", "hi\n", ""),
        ("excerpt", "k: v\n", "a/b.yaml"), ("ctrl-c", "", "")]
    with pytest.raises(AssertionError, match="cannot check"):
        steps("```console\n$ ls\n```\n")
