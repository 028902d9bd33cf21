"""iochost: host EPICS soft-IOC plugins, one soft IOC process per plugin.

Plugin authors import the SDK from here: ``from iochost import TaskBase, JobBase, JobResult, DeclarativeTask``.
"""

from iochost.declarative.functions import register
from iochost.sdk import DeclarativeTask, JobBase, JobResult, TaskBase

__version__ = "0.1.0"

__all__ = ["TaskBase", "JobBase", "JobResult", "DeclarativeTask", "register", "__version__"]
