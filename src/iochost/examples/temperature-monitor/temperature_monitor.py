"""Simulated temperature loop: the reading relaxes towards SETPOINT with some noise."""

import random

from iochost import TaskBase


class TemperatureMonitor(TaskBase):
    def initialize(self):
        self.temperature = 20.0
        self.history = []
        self.logger.info("monitoring, threshold %.1f", self.parameters["threshold"])

    def execute(self):
        target = self.get_pv("SETPOINT")
        self.temperature += 0.2 * (target - self.temperature) + random.gauss(0.0, 0.05)
        self.history = (self.history + [self.temperature])[-60:]
        self.set_pv("READING", self.temperature)
        self.set_pv("HISTORY", self.history)
        self.set_pv("ALARM", self.temperature > self.parameters["threshold"])

    def on_input(self, name, value):
        self.logger.info("operator set %s = %s", name, value)
        self.set_message(f"{name} -> {value}")

    def cleanup(self):
        self.logger.info("monitor stopped after %d cycles", self.cycle_count)
