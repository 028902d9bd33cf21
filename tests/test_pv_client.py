"""pv_client (iocmng's API for PVs of other IOCs) against real soft IOCs, over CA and PVA: in a
plain Python process from ordinary threads, and in a real worker from a plugin's cycle and from a
thread of its own, observed over CA; plus iocmng's other import names inside that worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import Processes, wait_for
from sample_plugins import make_plugin
from test_declarative import _ioc, _run_plugin, link_env  # noqa: F401 - link_env: a fixture
from test_value_types_links import _device_and_plugin_env

DEVICE_RECORDS = ("A", "B", "S=string", "W=floats", "E=enum")

# A plain Python process (no softioc, cothread not imported by anyone else), as the PV gateway
# child uses the module: init, then every call from threads that are not the main one.
STANDALONE = """
import json, sys, threading

from iochost import pv_client

dev, provider = sys.argv[1], sys.argv[2]
lazy = sorted({m.split(".")[0] for m in sys.modules} & {"cothread", "p4p", "softioc", "numpy"})
pv_client.init(pva=provider == "pva")
out = {"lazy": lazy, "provider": pv_client.get_provider()}
seen, conn, arrived = [], [], threading.Event()

def on_value(value):
    seen.append(value)
    if value == 7.5:
        arrived.set()

def work():
    out["key"] = pv_client.monitor(dev + ":A", on_value, name="a", conn_callback=conn.append)
    pv_client.put(dev + ":A", 7.5, timeout=5.0)
    pv_client.put(dev + ":S", "hello", timeout=5.0)
    pv_client.put(dev + ":W", [1.0, 2.0, 3.0, 4.0], timeout=5.0)
    pv_client.put(dev + ":E", 2, timeout=5.0)
    out["values"] = {n: pv_client.get(dev + ":" + n, timeout=5.0) for n in ("A", "S", "W", "E")}
    out["types"] = {n: type(v).__name__ for n, v in out["values"].items()}
    try:
        pv_client.get(dev + ":NOPE", timeout=0.5)
    except TimeoutError as exc:
        out["missing"] = str(exc)

thread = threading.Thread(target=work)
thread.start()
thread.join()
out["monitored"] = arrived.wait(20.0)
out["seen_type"] = type(seen[-1]).__name__ if seen else None
out["conn"] = conn
out["active"] = pv_client.active_monitors()
out["unmonitor"] = [pv_client.unmonitor("a"), pv_client.unmonitor("a")]
out["after"] = pv_client.active_monitors()
print(json.dumps(out), flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["ca", "pva"])
def test_a_plain_process_gets_puts_and_monitors_from_threads(tmp_path: Path, processes: Processes,
                                                             link_env: dict[str, Any], protocol: str) -> None:
    env, ports = link_env["env"], link_env["ports"]
    dev = f"PCSA{protocol.upper()}{ports['dev']}"
    device_env, client_env = _device_and_plugin_env(env, ports, protocol)  # over PVA, CA cannot see dev
    _ioc(processes, device_env, ports["dev"], dev, *DEVICE_RECORDS)
    script = tmp_path / "standalone.py"
    script.write_text(STANDALONE)
    run = subprocess.run([sys.executable, str(script), dev, protocol], check=False, env=client_env, capture_output=True,
                         text=True, timeout=120, start_new_session=True)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["lazy"] == []  # importing iochost loads neither cothread nor p4p
    assert out["provider"] == protocol
    assert out["values"] == {"A": 7.5, "S": "hello", "W": [1.0, 2.0, 3.0, 4.0], "E": 2}
    assert out["types"] == {"A": "float", "S": "str", "W": "list", "E": "int"}  # plain values
    assert out["missing"].startswith(f"get '{dev}:NOPE' over {protocol.upper()}: no answer within 0.5 s")
    assert out["monitored"] and out["seen_type"] == "float" and out["conn"][:1] == [True]
    assert out["key"] == "a" and out["active"] == {"a": f"{dev}:A"}
    assert out["unmonitor"] == [True, False] and out["after"] == {}


# The plugin of QUICKSTART "Reading/Writing External PVs" and HOWTO §15 (iocmng 2.7.9), in our
# words: iocmng's imports, pv_client from execute() and from a thread of its own, a monitor
# stopped on request, and iocmng.core.safe_eval / functions used beside them.
PV_USER = """
    import threading

    from iocmng import TaskBase, pv_client
    from iocmng.core import pv_client as core_pv_client
    from iocmng.core.functions import register
    from iocmng.core.safe_eval import safe_eval

    DEV = "{dev}"
    register("triple", lambda x: 3 * x)


    class PvUser(TaskBase):
        def initialize(self):
            self.seen = None
            self.from_thread = "waiting"
            self.key = pv_client.monitor(DEV + ":A", self.on_value, name="watch")
            threading.Thread(target=self.thread_work, daemon=True).start()

        def on_value(self, value):
            self.seen = value

        def thread_work(self):
            pv_client.put(DEV + ":S", "from a thread", timeout=5.0)
            self.from_thread = pv_client.get(DEV + ":S", timeout=5.0)

        def execute(self):
            value = pv_client.get(DEV + ":A", timeout=5.0)
            self.set_pv("READ", value)
            core_pv_client.put(DEV + ":B", safe_eval("triple(v) + 1", {{"v": value}}), timeout=5.0)
            self.set_pv("SEEN", -1.0 if self.seen is None else self.seen)
            self.set_pv("THREAD", self.from_thread)
            self.set_pv("PROVIDER", pv_client.get_provider())
            self.set_pv("ACTIVE", ",".join(k + "=" + v for k, v in sorted(pv_client.active_monitors().items())))
            try:
                pv_client.get(DEV + ":NOPE", timeout=0.3)
                self.set_pv("MISSING", "returned")
            except TimeoutError:
                self.set_pv("MISSING", "TimeoutError")

        def handle_pv_write(self, pv_name, value):
            self.logger.info("operator wrote %s = %r", pv_name, value)
            if pv_name == "STOP" and value:
                self.set_pv("STOPPED", int(pv_client.unmonitor(self.key)))

        def cleanup(self):
            pv_client.unmonitor_all()
"""

PV_USER_CONFIG = """
    # interval: longer than a cycle takes (its 0.3 s timeout included)
    parameters: {{mode: continuous, interval: 1.0, pva: {pva}}}
    arguments:
      inputs:
        STOP: {{type: int, value: 0}}
      outputs:
        READ: {{type: float, value: -1.0}}
        SEEN: {{type: float, value: -1.0}}
        THREAD: {{type: string, value: ""}}
        PROVIDER: {{type: string, value: ""}}
        ACTIVE: {{type: string, value: ""}}
        MISSING: {{type: string, value: ""}}
        STOPPED: {{type: int, value: 0}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["ca", "pva"])
def test_a_plugin_uses_pv_client_over_its_pva_parameter(tmp_path: Path, processes: Processes,
                                                        link_env: dict[str, Any], protocol: str) -> None:
    env, ports, ca = link_env["env"], link_env["ports"], link_env["ca"]
    dev = f"PCWK{protocol.upper()}{ports['dev']}"
    device_env, plugin_env = _device_and_plugin_env(env, ports, protocol)  # over PVA, its CA cannot see dev
    _ioc(processes, device_env, ports["dev"], dev, *DEVICE_RECORDS)
    plugin = make_plugin(tmp_path, "pv_user", PV_USER.format(dev=dev),
                         PV_USER_CONFIG.format(pva=str(protocol == "pva").lower()))
    _run_plugin(processes, plugin_env, ports["plugin"], plugin, "pvu")
    pv = "DT:PVU:"

    def get(name: str) -> Any:
        return ca.caget(pv + name, timeout=2)

    log = plugin / "run.log"
    wait_for(lambda: get("PROVIDER") == protocol, timeout=30,
             what=f"the plugin serving, provider {protocol} ({log.read_text(errors='replace')[-2000:]})")
    assert get("ACTIVE") == f"watch={dev}:A"
    wait_for(lambda: get("THREAD") == "from a thread", timeout=15, what="put and get from a plugin thread")
    ca.caput(f"{dev}:A", 4.0)  # the test's own CA client writes the device
    wait_for(lambda: get("READ") == 4.0, timeout=15, what="get() in execute() reads the device")
    wait_for(lambda: get("SEEN") == 4.0, timeout=15, what="the monitor's callback got the new value")
    wait_for(lambda: ca.caget(f"{dev}:B", timeout=2) == 13.0, timeout=15,
             what="put() of safe_eval('triple(v) + 1') with a registered function")
    # a PV nobody serves: TimeoutError within its timeout, and the cycles go on
    wait_for(lambda: get("MISSING") == "TimeoutError", timeout=15, what="the missing PV's TimeoutError")
    cycles = get("CYCLE_COUNT")
    wait_for(lambda: get("CYCLE_COUNT") >= cycles + 3, timeout=30, what="cycles continuing")

    ca.caput(pv + "STOP", 1)
    wait_for(lambda: get("STOPPED") == 1, timeout=15, what="unmonitor() answered True")
    wait_for(lambda: get("ACTIVE") == "", timeout=15, what="no monitor left")
    ca.caput(f"{dev}:A", 9.0)
    wait_for(lambda: get("READ") == 9.0, timeout=15, what="get() reads the new value")
    cycles = get("CYCLE_COUNT")
    wait_for(lambda: get("CYCLE_COUNT") >= cycles + 2, timeout=30, what="two more cycles")
    assert get("SEEN") == 4.0  # the stopped monitor's callback saw nothing more


def test_importing_iochost_loads_no_epics_client() -> None:
    """The daemon imports iochost (and with it pv_client): cothread and p4p load on first use only."""
    code = ("import iochost, iochost.api.app, iochost.compat, sys; from iochost import pv_client; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'cothread', 'p4p', 'caproto', 'numpy', 'softioc'}))")
    run = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_iocmng_import_names_are_iochost_modules() -> None:
    from iochost import pv_client
    from iochost.compat import install_iocmng_alias

    install_iocmng_alias()
    import iocmng
    import iocmng.core.pv_client as by_path
    from iocmng.core import pv_client as from_core
    from iocmng.core.functions import get_registry, register
    from iocmng.core.safe_eval import safe_eval

    assert iocmng.pv_client is from_core is by_path is pv_client
    assert callable(register) and "mean" in get_registry()
    assert safe_eval("a == 0 and b == 1", {"a": 0, "b": 1}) is True


# iocmng 2.7.9's tests/test_safe_eval.py pins these (the facts, in our words): a parse failure is
# SyntaxError, a call of an unregistered function or any construct outside the language ValueError,
# a name missing from the variables NameError, and extra_functions join the library for one call.
def test_safe_eval_behaves_as_iocmngs() -> None:
    from iochost.compat.safe_eval import safe_eval

    assert safe_eval("1 if x > 0 else 0", {"x": 5}) == 1
    assert safe_eval("mean(buf) > 0.5", {"buf": [0.1, 0.9, 0.8]}) is True
    assert safe_eval("clamp(x, 0, 10)", {"x": 15}) == 10
    assert safe_eval("round(sqrt(x))", {"x": 2}) == 1
    assert safe_eval("double(x)", {"x": 5}, extra_functions={"double": lambda v: 2 * v}) == 10
    with pytest.raises(ValueError, match="'double' is not registered"):
        safe_eval("double(x)", {"x": 5})  # extra_functions lasted one call
    with pytest.raises(ValueError, match="'print' is not registered"):
        safe_eval("print('hello')", {})
    for construct in ("x.upper()", "x.__class__", "x[0]", "__import__('os')"):
        with pytest.raises(ValueError, match="Unsafe expression"):
            safe_eval(construct, {"x": "abc"})
    with pytest.raises(SyntaxError):
        safe_eval("if True:", {})
    with pytest.raises(NameError, match="unknown_var"):
        safe_eval("unknown_var == 1", {})
