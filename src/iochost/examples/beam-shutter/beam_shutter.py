"""A (simulated) beam shutter that moves once per RUN trigger."""

import time

from iochost import TaskBase


class BeamShutter(TaskBase):
    def initialize(self):
        self.open = False

    def execute(self):
        command = ("Toggle", "Open", "Close")[self.get_pv("COMMAND")]
        self.open = (not self.open) if command == "Toggle" else command == "Open"
        self.set_pv("STATE", int(self.open))
        self.set_pv("OPERATIONS", self.get_pv("OPERATIONS") + 1)
        self.set_pv("LAST_ACTION", time.strftime("%H:%M:%S ") + ("opened" if self.open else "closed"))

    def cleanup(self):
        self.logger.info("shutter left %s", "open" if self.open else "closed")
