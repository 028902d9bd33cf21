"""What a plugin is: a task or a job; and how a task runs: continuously or when triggered.

Its own module at the bottom of the house, not in ``config/``: ``report.py`` (what
validation learned) needs these types and sits below ``config/``, which imports it. So the
store's registry entry, the validator, the PV naming, the API models and the report all
import them from here.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["task", "job"]
Mode = Literal["continuous", "triggered", "reactive"]  # a task's mode; a job has none
