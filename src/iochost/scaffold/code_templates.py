"""The plugin module ``iochost new`` writes, one per kind: a class that validates and runs as written.

Templates are string.Template (``$name``; ``$$`` is a dollar). Placeholders: ``$name`` (plugin
name), ``$Class``, ``$module``, ``$test_module``, ``$PVNAME`` (the name upper-cased, as in PV
names), ``$kind_title``.
"""

from __future__ import annotations

from string import Template

TASK_MODULE = Template('''\
"""$name: every cycle, publish SETPOINT times the ``gain`` parameter on OUTPUT."""

from iochost import TaskBase


class $Class(TaskBase):
    def initialize(self):
        """Once, after the IOC is up: read parameters, open connections."""
        self.gain = float(self.parameters["gain"])
        self.logger.info("gain %.3f", self.gain)

    def execute(self):
        """Every ``interval`` seconds (while ENABLE=1)."""
        self.set_pv("OUTPUT", self.get_pv("SETPOINT") * self.gain)

    def on_input(self, name, value):
        """An operator wrote an input PV."""
        self.set_message(f"{name} -> {value}")

    def cleanup(self):
        """Once, when the IOC stops: release what initialize() took."""
        self.logger.info("stopped after %d cycles", self.cycle_count)
''')

TRIGGERED_MODULE = Template('''\
"""$name: each RUN=1 moves POSITION by one STEP and counts the move."""

import time

from iochost import TaskBase


class $Class(TaskBase):
    def initialize(self):
        """Once, after the IOC is up: read parameters, open connections."""
        self.position = 0.0

    def execute(self):
        """The action: runs once per RUN=1 (triggered() calls execute() unless you override it)."""
        self.position += self.get_pv("STEP")
        self.set_pv("POSITION", self.position)
        self.set_pv("MOVES", self.get_pv("MOVES") + 1)
        self.set_pv("LAST_ACTION", time.strftime("%H:%M:%S ") + f"moved to {self.position:g}")

    def cleanup(self):
        """Once, when the IOC stops: release what initialize() took."""
        self.logger.info("left at position %g", self.position)
''')

JOB_MODULE = Template('''\
"""$name: each run takes ``samples`` readings scaled by SCALE and returns their mean."""

from iochost import JobBase, JobResult


class $Class(JobBase):
    def initialize(self):
        """Once, after the IOC is up: read parameters, open connections."""
        self.runs = 0

    def execute(self) -> JobResult:
        """Once per run: RUN=1, or ``POST /api/v1/jobs/$name/run`` under the daemon."""
        scale = self.get_pv("SCALE")
        readings = []
        for index in range(int(self.parameters["samples"])):
            self.check_cancelled()  # a cancelled run ends here, between two steps
            readings.append(scale * (index + 1))  # stands in for reading a device
        mean = sum(readings) / len(readings)
        self.runs += 1
        self.set_pv("LAST_MEAN", mean)
        self.set_pv("RUNS", self.runs)
        return JobResult(success=True, data={"mean": mean, "readings": readings},
                         message=f"mean {mean:.2f} V")
''')

DECLARATIVE_MODULE = Template('''\
"""$name: a declarative task; its logic is config.yaml's transforms and rules."""

from iochost import DeclarativeTask


class $Class(DeclarativeTask):
    pass
''')
