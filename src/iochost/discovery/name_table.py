"""Which worker serves which PV name: the table the search responder answers from."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Iterable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Conflict:
    """``name`` is declared by ``rejected`` too, but ``owner`` registered it first and keeps it."""

    name: str
    owner: str
    rejected: str


@dataclass(frozen=True)
class Entry:
    owner: str
    port: int


class NameTable:
    """PV name -> (owner, CA server port), looked up in O(1) for every name search.

    Thread-safe: every operation holds one lock, so the supervisor may register from any
    thread while the event loop answers searches. A name claimed by several owners is
    served by the one that registered it first; the others' claims are kept (and reported
    as conflicts), so if the first owner goes away the next claimant serves the name,
    just as a broadcast search would then find the remaining IOC.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ports: dict[str, int] = {}  # owner -> port
        self._names: dict[str, list[str]] = {}  # owner -> its names, in declaration order
        self._claims: dict[str, list[str]] = {}  # name -> owners, first one serves it

    def register(self, owner: str, port: int, pv_names: Iterable[str]) -> list[Conflict]:
        """Serve ``pv_names`` at ``port`` for ``owner``; replaces the owner's previous set.

        Names the owner already had keep their place in line, so re-registering a
        restarted worker never hands its PVs to a duplicate claimant.
        """
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        names = list(dict.fromkeys(n for n in (name.strip() for name in pv_names) if n))
        conflicts: list[Conflict] = []
        with self._lock:
            for name in set(self._names.get(owner, ())) - set(names):
                self._drop_claim(name, owner)
            self._ports[owner] = port
            self._names[owner] = names
            for name in names:
                claimants = self._claims.setdefault(name, [])
                if owner not in claimants:
                    claimants.append(owner)
                if claimants[0] != owner:
                    conflicts.append(Conflict(name, claimants[0], owner))
        for conflict in conflicts:
            log.warning("PV %s is declared by %s and %s; %s keeps serving it",
                        conflict.name, conflict.owner, conflict.rejected, conflict.owner)
        return conflicts

    def unregister(self, owner: str) -> bool:
        """Stop serving ``owner``'s names; False if it was not registered."""
        with self._lock:
            names = self._names.pop(owner, None)
            if names is None:
                return False
            del self._ports[owner]
            for name in names:
                self._drop_claim(name, owner)
        return True

    def _drop_claim(self, name: str, owner: str) -> None:
        claimants = self._claims[name]
        was_serving = claimants[0] == owner
        claimants.remove(owner)
        if not claimants:
            del self._claims[name]
        elif was_serving:
            log.info("PV %s is now served by %s (%s left)", name, claimants[0], owner)

    def lookup(self, name: str) -> Entry | None:
        """Who serves a CA channel name; ``REC.FIELD`` and ``REC.{filter}`` resolve by record.

        Field names are not checked: the worker's own server rejects an unknown field
        when the client creates the channel, as it would for a direct connection.
        """
        with self._lock:
            claimants = self._claims.get(name)
            if claimants is None and "." in name:
                claimants = self._claims.get(name.partition(".")[0])
            if claimants is None:
                return None
            owner = claimants[0]
            return Entry(owner, self._ports[owner])

    def owners(self) -> dict[str, int]:
        """owner -> port, a snapshot."""
        with self._lock:
            return dict(self._ports)

    def names(self, owner: str) -> list[str]:
        """The names ``owner`` registered (including ones another owner serves)."""
        with self._lock:
            return list(self._names.get(owner, ()))

    def __len__(self) -> int:
        """Number of distinct names served."""
        with self._lock:
            return len(self._claims)
