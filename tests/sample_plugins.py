"""Plugin sources the daemon tests add from git: small, real, and each with one purpose."""

import textwrap
from pathlib import Path


def make_plugin(root: Path, name: str, code: str, config: str) -> Path:
    """A plugin directory ``root/name`` holding ``name.py`` and ``config.yaml`` (for ``iochost run``)."""
    plugin_dir = root / name
    plugin_dir.mkdir()
    (plugin_dir / f"{name}.py").write_text(textwrap.dedent(code))
    (plugin_dir / "config.yaml").write_text(textwrap.dedent(config))
    return plugin_dir


TICKER = """
    from iochost import TaskBase

    class Ticker(TaskBase):
        def initialize(self):
            self.n = 0

        def execute(self):
            self.n += 1
            self.set_pv("VALUE", self.n)

        def cleanup(self):
            pass
"""

TICKER_CONFIG = """
    parameters: {interval: 0.2}
    pvs:
      inputs:
        GAIN: {type: float, value: 2.5, unit: V, prec: 2}
      outputs:
        VALUE: {type: int, value: 0}
"""

# A run of SLOW_JOB given a parameter `executing` (a path) touches that file first: the test's
# sign that execute() runs.
SLOW_JOB = """
    import pathlib
    import time
    from iochost import JobBase, JobResult

    class Slow(JobBase):
        def initialize(self):
            pass

        def execute(self):
            if "executing" in self.parameters:
                pathlib.Path(self.parameters["executing"]).touch()
            steps = int(self.parameters["steps"])
            for _ in range(steps):
                time.sleep(0.1)
                self.check_cancelled()
            return JobResult(success=True, data={"steps": steps}, message=f"{steps} steps")
"""

SLOW_JOB_CONFIG = "parameters: {steps: 3}\npvs: {outputs: {DONE: {type: int}}}\n"

# TICKER whose import holds until the test opens the gate: the validation probe (and so the
# add) is caught in the middle for as long as the test needs, with no guess at how long.
GATED_TICKER = """\
    import pathlib
    import time

    from iochost import TaskBase

    GATE = pathlib.Path({gate!r})
    (GATE / "importing").touch()
    while not (GATE / "go").exists():
        time.sleep(0.05)


    class Ticker(TaskBase):
        def initialize(self):
            pass

        def execute(self):
            pass

        def cleanup(self):
            pass
"""


def gated_ticker(gate: Path) -> str:
    """GATED_TICKER held by the folder ``gate`` (made here): its import touches
    ``gate/importing``, then waits until ``gate/go`` exists."""
    gate.mkdir(parents=True, exist_ok=True)
    return GATED_TICKER.format(gate=str(gate))

# -- hostile plugins ------------------------------------------------------------------------------
# Nine anchors of nine references each: 9^9 = 387 million nodes once expanded, 600 bytes.
BILLION_LAUGHS = "lol0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
) + "parameters: {interval: 0.5, payload: *a9}\n"
DEEP_FLOW = "parameters: {payload: " + "[" * 50_000 + "]" * 50_000 + "}\n"
DEEP_BLOCK = ("parameters:\n" + "".join("  " * (depth + 1) + f"k{depth}:\n" for depth in range(200))
              + "    " * 201 + "x\n")
OVERSIZE_CONFIG = "parameters:\n  interval: 0.5\n" + "".join(f"  pad{i}: {'x' * 60}\n" for i in range(5000))

FLOOD = """
    import os, time
    from iochost import TaskBase

    BLOCK = (b"x" * 1023 + b"\\n") * 1024  # 1 MiB of lines

    class Flood(TaskBase):
        def initialize(self):
            self.written = 0

        def execute(self):
            deadline = time.monotonic() + 0.2
            while time.monotonic() < deadline:
                print(BLOCK.decode(), end="", flush=True)
                self.written += len(BLOCK)
                self.written += os.write(2, BLOCK)
                for i in range(200):
                    self.logger.info("flood line %d", i)
            self.set_pv("WRITTEN_MB", self.written / 2**20)

        def cleanup(self):
            pass
"""
FLOOD_CONFIG = """
    parameters: {interval: 0.05}
    pvs:
      outputs:
        WRITTEN_MB: {type: float, unit: MB, prec: 1}
"""
