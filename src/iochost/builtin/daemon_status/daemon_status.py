"""The daemon's own soft IOC: the controller's state for Phoebus, with no REST call.

Its config.yaml is generated from the daemon's settings (``supervisor/daemon_ioc.py``).
The supervisor pushes the counts, HEALTH, NAMES, the plugin table (ROWnnn:*) and
CONTROL_MSG with ``set_pvs`` commands as plugins come and go; this task keeps UPTIME
ticking and turns an operator's write to START / STOP / RESTART into a control request.
"""

import time
from typing import Any

from iochost import TaskBase
from iochost.contract.messages import ControlRequest


class DaemonStatus(TaskBase):
    _channel = None

    def _attach_channel(self, channel: Any) -> None:
        """The worker hands over its channel to the supervisor, before initialize()."""
        self._channel = channel

    def initialize(self) -> None:
        self.started = float(self.parameters.get("started_at") or time.time())
        self.control_pvs = dict(self.parameters.get("control_pvs") or {})  # PV -> action

    def execute(self) -> None:
        self.set_pv("UPTIME", round(time.time() - self.started, 1))

    def on_input(self, name: str, value: Any) -> None:
        """The text as written, untrimmed: the supervisor takes it only if it is a whole
        plugin name (an empty write, a panel clearing the field, asks for nothing).

        The PV is then emptied: a put EPICS refuses still processes the record (a DBR_STRING
        into the char array, as ``caput`` without ``-S`` sends it), which would otherwise
        hand the previous name over again."""
        action = self.control_pvs.get(name)
        text = str(value)
        if action is None or not text.strip() or self._channel is None:
            return
        self._channel.send(ControlRequest(action=action, plugin=text))
        self.set_pv(name, "")

    def cleanup(self) -> None:
        pass
