"""The typed parts of a plugin's lifecycle beside its ``State``: how far it is in the
registry (``Admission``), what was asked of it that is still to be carried out
(``Intent``), and the upgrade in progress (``Upgrade``, at its ``UpgradePhase``). Each is
one value, so every combination the lifecycle can be in is named, and its handlers branch
on these values, never on loose flags.

The upgrade's phases, in order: preparing (the old worker serves while the new revision is
staged and validated) -> switching (the old worker stops, the new revision is swapped in)
-> starting -> probation (the new worker runs; its exit now rolls back) -> keeping (the
previous revision is dropped) -> done; or rolling_back (the previous revision is swapped
back) -> restarting_old -> done. Done is ``lc.upgrade is None``; ``lc.upgrade_outcome``
says how.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from iochost.config.parameters import Parameters
from iochost.errors import IochostError
from iochost.store import RegistryEntry
from iochost.supervisor import lifecycle_types as t


class Admission(Enum):
    """How far the plugin is in: an add's failure removes it, a registered one stays."""

    NEW = "new"  # not in the registry yet: before its add or its restore
    ADDING = "adding"  # an add fetches and validates it: its failure removes it
    FIRST_START = "first_start"  # the add registered it; its first start decides how the add ends
    REGISTERED = "registered"  # the registry holds it: restored, or added and started (or stopped)

    @property
    def registered(self) -> bool:
        """The registry holds it (an add in its first start included)."""
        return self in (Admission.FIRST_START, Admission.REGISTERED)

    @property
    def adding(self) -> bool:
        """An add is in progress: its caller waits for how it ends."""
        return self in (Admission.ADDING, Admission.FIRST_START)


class Intent(Enum):
    """What the operator or the daemon asked for that is not done yet.

    One at a time, the stronger one winning (``stronger``): a delete ends everything, the
    daemon's shutdown ends every restart, and a stop cancels a restart.
    """

    NONE = "none"
    STOP_AFTER_ADD = "stop_after_add"  # stopped while its add (or restore) ran: it ends stopped
    RESTART = "restart"  # its worker stops, then a new one starts
    CLOSE = "close"  # the daemon shuts down: no exit is a crash, nothing restarts
    DELETE = "delete"  # everything of it goes once its worker (if any) has stopped

    @property
    def rank(self) -> int:
        return _RANK[self]

    def stronger(self, other: Intent) -> Intent:
        """The intent that stands when ``other`` is asked for while this one is pending."""
        return other if other.rank >= self.rank else self


_RANK = {Intent.NONE: 0, Intent.STOP_AFTER_ADD: 1, Intent.RESTART: 1, Intent.CLOSE: 2, Intent.DELETE: 3}


class UpgradePhase(Enum):
    """Where an upgrade in progress is (this module's docstring tells the order)."""

    PREPARING = "preparing"
    SWITCHING = "switching"
    STARTING = "starting"
    PROBATION = "probation"
    KEEPING = "keeping"
    ROLLING_BACK = "rolling_back"
    RESTARTING_OLD = "restarting_old"


P = UpgradePhase
# A worker of the upgrade runs (or starts): its unasked exit ends the phase (``worker_lost``).
WORKER_PHASES = frozenset({P.STARTING, P.PROBATION, P.RESTARTING_OLD})


@dataclass
class Upgrade:
    """An upgrade in progress: the revision it replaces (to roll back to) and where it is."""

    old_entry: RegistryEntry
    old_pvs: list[str]
    old_pv_prefix: str = ""
    old_parameters: Parameters | None = None
    phase: UpgradePhase = P.PREPARING
    new: t.Prepared | None = None  # the staged revision, from switching on
    resume: bool = True  # start the new revision (the plugin is meant to run)
    error: IochostError | None = None  # why it is rolling back
