"""No code: the interlock is all in config.yaml (links, a transform, a latched rule)."""

from iochost import DeclarativeTask


class OverTemperatureInterlock(DeclarativeTask):
    pass
