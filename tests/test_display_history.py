"""A history waveform on a real daemon after a restart: its record reports NORD honestly, a
CA client asking for the variable length (count 0) and a PVA client (the panel's plot) get the
readings and no zeros, while a fixed-length CA read (Phoebus's CA with variable_length_array
false) gets NELM elements padded with zeros: why the panel's plot reads it over PVA."""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import wait_for
from daemon_harness import Daemon, wait_until

PREFIX = "IOCHN"  # its own: libca keeps a channel per name for the session
CONFIG = """\
    parameters: {mode: continuous, interval: 0.1}
    pvs:
      outputs:
        HISTORY: {type: float, length: 60, description: "Last readings"}
"""
CODE = """\
    from iochost import TaskBase


    class Recorder(TaskBase):
        def initialize(self):
            self.history = []

        def execute(self):
            if len(self.history) < 3:  # three readings, then it waits
                self.history.append(10.0 + len(self.history))
                self.set_pv("HISTORY", self.history)

        def cleanup(self):
            pass
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    base = tmp_path_factory.mktemp("history")
    plugin = base / "recorder"
    plugin.mkdir()
    (plugin / "config.yaml").write_text(textwrap.dedent(CONFIG))
    (plugin / "recorder.py").write_text(textwrap.dedent(CODE))
    with Daemon(base / "data", "--prefix", PREFIX).serving() as served:
        with served.client() as api:
            response = api.post("/plugins", json={"name": "recorder", "local_path": str(plugin)})
            assert response.status_code == 201, response.text
            wait_until(lambda: api.get("/plugins/recorder").json()["state"] == "running", what="recorder running")
        yield served


def test_after_a_restart_nord_and_variable_length_reads_hold_the_readings(daemon: Daemon, ca: Any,
                                                                          pva: Any) -> None:
    pv = f"{PREFIX}:RECORDER:HISTORY"
    wait_for(lambda: ca.caget(f"{pv}.NORD", timeout=5) == 3, timeout=30, what="three readings")
    with daemon.client() as api:
        assert api.post("/plugins/recorder/restart").status_code == 200
        wait_until(lambda: api.get("/plugins/recorder").json()["state"] == "running", what="running again")
        wait_for(lambda: ca.caget(f"{pv}.NORD", timeout=5) == 3, timeout=30, what="three readings after the restart")
        values = ca.caget(pv, count=0, timeout=5)  # count 0 on the wire: the variable length
        assert list(values) == [10.0, 11.0, 12.0]
        fixed = ca.caget(pv, count=-1, timeout=5)  # NELM, as a client not asking for NORD
        assert len(fixed) == 60 and list(fixed[3:]) == [0.0] * 57
        assert list(pva.get(pv, timeout=5).value) == [10.0, 11.0, 12.0]
        panel = ET.fromstring(api.get("/displays/recorder.bob").content)
    traces = panel.findall("widget[@type='xyplot']/traces/trace")
    assert [trace.findtext("y_pv") for trace in traces] == [f"pva://{pv}"]
