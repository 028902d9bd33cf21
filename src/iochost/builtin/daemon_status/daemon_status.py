"""The daemon's own soft IOC: the controller's state for Phoebus, with no REST call.

The supervisor pushes PLUGINS/RUNNING/FAILED/HEALTH/NAMES with ``set_pvs`` commands as
plugins come and go; this task only keeps UPTIME ticking.
"""

import time

from iochost import TaskBase


class DaemonStatus(TaskBase):
    def initialize(self):
        self.started = float(self.parameters.get("started_at") or time.time())

    def execute(self):
        self.set_pv("UPTIME", round(time.time() - self.started, 1))

    def cleanup(self):
        pass
