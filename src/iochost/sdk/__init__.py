"""The plugin SDK: the classes plugin authors derive from."""

from iochost.sdk.job import JobBase, JobCancelled, JobResult
from iochost.sdk.status import JobStatus, TaskStatus
from iochost.sdk.task import TaskBase

__all__ = ["TaskBase", "JobBase", "JobResult", "JobCancelled", "TaskStatus", "JobStatus"]
