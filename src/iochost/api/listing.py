"""Plugin records as JSON, each serialised again only when it changed.

``GET /plugins`` is what dashboards poll. The records come from the supervisor on every
request (so states are live); a plugin's lifecycle hands out the same record object until
its next event, and serialising each one to JSON cost more than everything else in the
request. So each record's JSON bytes are kept with the record they came from, and reused
while the record is that same object or equals it; the list is the kept bytes joined. The bytes are the same
``TypeAdapter.dump_json`` FastAPI produces for the response model, so the body does not
change by a byte.

"Equals" is strict for what ``==`` would let through: ``parameters`` (free-form JSON) must
match in types and key order too (``1 == 1.0 == True`` and ``{a, b} == {b, a}`` serialise
differently), and the kept copy of it is a deep copy, so a nested value changed in place
cannot go unnoticed. The other fields are scalars, enums, datetimes and models that the
supervisor replaces rather than mutates.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import Response
from pydantic import TypeAdapter

from iochost.kinds import Kind
from iochost.supervisor.public import PluginRecord

_RECORD = TypeAdapter(PluginRecord)


def _exact(a: Any, b: Any) -> bool:
    """``a == b`` where the JSON of the two must be the same as well."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            _exact(ka, kb) and _exact(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_exact, a, b))
    return bool(a == b)


def _same(kept: PluginRecord, fresh: PluginRecord) -> bool:
    return kept == fresh and _exact(kept.parameters, fresh.parameters)


class RecordCache:
    """Per plugin name: the record last serialised and its JSON bytes. Used from the event
    loop only; bounded by the plugins there are (a complete listing drops the others)."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[PluginRecord, PluginRecord, bytes]] = {}

    def encode(self, record: PluginRecord) -> bytes:
        """The record's JSON. The supervisor hands out the same record object until the
        plugin changes, so the common case is an identity check; a new object equal to the
        kept one reuses the bytes too."""
        kept = self._kept.get(record.name)
        if kept is not None and (kept[0] is record or _same(kept[1], record)):
            if kept[0] is not record:
                self._kept[record.name] = (record, kept[1], kept[2])
            return kept[2]
        data = _RECORD.dump_json(record, by_alias=True)  # what FastAPI does for response_model
        snapshot = record.model_copy(update={"parameters": copy.deepcopy(record.parameters)})
        self._kept[record.name] = (record, snapshot, data)
        return data

    def plugin_list(self, records: list[PluginRecord], *, complete: bool) -> Response:
        """``PluginList`` as a response. ``complete``: ``records`` are every plugin there is,
        so the kept records of any other (deleted) plugin are dropped; a listing of one kind
        drops them only once they outnumber what it lists, so the kept ones stay bounded."""
        parts = [self.encode(record) for record in records]
        if len(self._kept) > len(records) and (complete or len(self._kept) > 2 * len(records) + 256):
            names = {record.name for record in records}
            self._kept = {name: kept for name, kept in self._kept.items() if name in names}
        body = b'{"plugins":[' + b",".join(parts) + b'],"count":' + str(len(parts)).encode() + b"}"
        return json_response(body)

    def plugin(self, record: PluginRecord) -> Response:
        return json_response(self.encode(record))


def plugin_list_response(state: Any, kind: Kind | None = None) -> Response:
    """``GET /plugins``: every plugin (or every one of ``kind``), live. One function for the
    route, its shortcut (``api.list_shortcut``) and iocmng's ``/tasks`` and ``/jobs``."""
    return state.record_cache.plugin_list(state.supervisor.list(kind), complete=kind is None)


def json_response(body: bytes, status_code: int = 200) -> Response:
    """What FastAPI sends for a ``response_model`` (same headers), from bytes made already."""
    return Response(content=body, status_code=status_code, media_type="application/json")
