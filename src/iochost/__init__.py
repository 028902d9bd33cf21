"""iochost: host EPICS soft-IOC plugins, one soft IOC process per plugin.

Plugin authors import the SDK from here: ``from iochost import TaskBase, JobBase, JobResult, DeclarativeTask``,
and ``pv_client`` for PVs of other IOCs.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from iochost.rule_language.functions import register
from iochost.runner import run_ioc
from iochost.sdk import DeclarativeTask, JobBase, JobResult, TaskBase, pv_client

try:
    __version__ = _version("iochost")  # the installed distribution's, set from git by setuptools-scm
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["TaskBase", "JobBase", "JobResult", "DeclarativeTask", "pv_client", "register", "run_ioc", "__version__"]
