"""What the template imports once, shared by every member it forks: everything a worker or a
probe imports before it reads plugin code, except softioc, and cothread, whose scheduler
coroutine made at import does not survive a fork into a member (a worker forked after it
crashes at its first cothread.Sleep). Imported for the side effect; plain imports, so the
import graph shows them.
"""

# ruff: noqa: F401
from __future__ import annotations

import code  # the stdlib module softioc's interactive shell needs

# softioc's first import: where EPICS's and pvxs's libraries are. Pure Python, no EPICS
# library loaded, but it pulls in setuptools and pkg_resources: ~0.2 s and ~9 MB that
# every worker would otherwise import for itself.
import epicscorelibs.path
import numpy
import pvxslibs.path
import pydantic
import yaml

import iochost.compat
import iochost.config
import iochost.contract.messages
import iochost.contract.worker_spec
import iochost.loader
import iochost.plugin_source.code  # the probe's stages, imported when it runs
import iochost.sdk
import iochost.worker.convert  # a worker's value rules (records, links, autosave); numpy is here already
import iochost.worker.host
import iochost.worker.main
import iochost.worker.probe
