"""Spawns, watches, restarts and stops plugin workers; never imports softioc."""

from iochost.supervisor.states import State
from iochost.supervisor.supervisor import Supervisor

__all__ = ["Supervisor", "State"]
