"""The plugin SDK: the classes plugin authors derive from."""

from iochost.sdk.declarative import DeclarativeTask
from iochost.sdk.job import JobBase, JobCancelled, JobResult
from iochost.sdk.status import JobStatus, TaskStatus
from iochost.sdk.task import TaskBase

__all__ = ["TaskBase", "DeclarativeTask", "JobBase", "JobResult", "JobCancelled", "TaskStatus", "JobStatus"]
