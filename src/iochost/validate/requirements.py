"""The requirements stage: what the store found wrong with requirements.txt, as validation issues.

The store (``iochost.store.envs``) reports its problems in its own terms, a
``RequirementsError`` of (line, message) pairs; clients see them as every other stage's
findings: a VALIDATION_FAILED error whose ``errors`` are ``requirements`` issues.
"""

from __future__ import annotations

from iochost.errors import ErrorCode, IochostError
from iochost.report import Stage, ValidationIssue
from iochost.store.envs import REQUIREMENTS_FILE, RequirementsError


def requirements_failure(error: RequirementsError) -> IochostError:
    """The VALIDATION_FAILED error clients get for ``error``: its summary, one issue a problem."""
    issues = [ValidationIssue(stage=Stage.REQUIREMENTS, file=REQUIREMENTS_FILE, line=line, message=message)
              for line, message in error.problems]
    return IochostError(ErrorCode.VALIDATION_FAILED, error.summary,
                        errors=[issue.model_dump(mode="json") for issue in issues])
