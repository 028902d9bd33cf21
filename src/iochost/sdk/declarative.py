"""DeclarativeTask: a task whose behaviour is all in config.yaml (links, transforms, rules)."""

from __future__ import annotations

from iochost.sdk.task import TaskBase


class DeclarativeTask(TaskBase):
    """Derive from this with an empty body (``class MyInterlock(DeclarativeTask): pass``):
    the worker runs the config's transforms and rules every cycle (or on each input change
    in reactive mode); there is no code of your own to run."""

    def initialize(self) -> None:
        pass

    def execute(self) -> None:
        pass

    def cleanup(self) -> None:
        pass
