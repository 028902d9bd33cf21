"""iochost: host EPICS soft-IOC plugins, one soft IOC process per plugin.

Plugin authors import the SDK from here: ``from iochost import TaskBase, JobBase, JobResult``.
"""

from iochost.sdk import JobBase, JobResult, TaskBase

__version__ = "0.1.0"

__all__ = ["TaskBase", "JobBase", "JobResult", "__version__"]
