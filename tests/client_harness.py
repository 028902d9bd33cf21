"""Drive tests/fixtures/epics_client.py (libca and pvxs in a process of their own) from a test."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from conftest import Processes

CLIENT = Path(__file__).parent / "fixtures" / "epics_client.py"


class EpicsClient:
    """One client process; only ``env`` tells it where to search. ``argv_prefix`` runs it
    somewhere else (``ip netns exec NS``)."""

    def __init__(self, processes: Processes, tmp: Path, env: dict[str, str],
                 argv_prefix: list[str] | None = None) -> None:
        self.stderr_path = tmp / f"epics_client.{time.monotonic_ns()}.err"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = processes.start([*(argv_prefix or []), sys.executable, str(CLIENT)], env=env,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                    text=True, bufsize=1)
        self.messages: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.messages.append(json.loads(line))
                self._cond.notify_all()

    def send(self, **request: Any) -> int:
        self._next_id += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": self._next_id, **request}) + "\n")
        self.proc.stdin.flush()
        return self._next_id

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str,
             since: int = 0) -> dict[str, Any]:
        """The first message from index ``since`` on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self.messages[since:]:
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what}; stderr:\n{self.stderr()}")
                self._cond.wait(remaining)

    def mark(self) -> int:
        """An index for ``wait(since=...)``: only messages from now on."""
        with self._cond:
            return len(self.messages)

    def reply(self, request_id: int, timeout: float) -> dict[str, Any]:
        return self.wait(lambda m: m.get("id") == request_id, timeout, f"reply {request_id}")

    def get(self, names: list[str], timeout: float = 5.0, pva: bool = False) -> dict[str, Any]:
        return self.reply(self.send(get=names, timeout=timeout, pva=pva), timeout + 10)["values"]

    def put(self, values: dict[str, Any], timeout: float = 5.0, pva: bool = False) -> dict[str, bool]:
        return self.reply(self.send(put=values, timeout=timeout, pva=pva), timeout + 10)["put"]

    def monitor(self, name: str, pva: bool = False) -> None:
        self.reply(self.send(monitor=name, pva=pva), 10)

    def update(self, name: str, pva: bool, predicate: Callable[[Any], bool], timeout: float, what: str,
               since: int = 0) -> dict[str, Any]:
        """The first monitor update of ``name`` (over PVA or CA) whose value satisfies ``predicate``."""
        return self.wait(lambda m: m.get("update") == name and bool(m.get("pva")) == pva
                         and predicate(m["value"]), timeout, what, since)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(15)
        self._stderr.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")
