"""iochost: host EPICS soft-IOC plugins, one soft IOC process per plugin.

Plugin authors import the SDK from here: ``from iochost import TaskBase, JobBase, JobResult, DeclarativeTask``,
and ``pv_client`` for PVs of other IOCs.
"""

from iochost.rule_language.functions import register
from iochost.runner import run_ioc
from iochost.sdk import DeclarativeTask, JobBase, JobResult, TaskBase, pv_client

__version__ = "0.1.0"

__all__ = ["TaskBase", "JobBase", "JobResult", "DeclarativeTask", "pv_client", "register", "run_ioc", "__version__"]
