"""Any value a PV client hands back, as a value JSON can carry (pure; used by the child).

JSON has no NaN nor infinities, and its text is UTF-8, while PVs hold IEEE floats and CA
strings hold any bytes. The rules, which docs/how-to/rest-api.md states for ``/pvs/*``:

- ``NaN``, ``inf`` and ``-inf`` become the strings ``"NaN"``, ``"Infinity"`` and
  ``"-Infinity"`` (the spelling JavaScript's ``Number()`` reads back);
- text (``str`` with surrogate-escaped bytes, or ``bytes``) becomes UTF-8 text, each byte
  that is not UTF-8 as U+FFFD, as pythonSoftIOC and the iochost logs show it;
- arrays (lists, tuples, anything with ``tolist()``: numpy) become lists, structures
  (dicts) objects with text keys; other objects their ``str()``.
"""

from __future__ import annotations

import math
from typing import Any

from iochost.record_text import text_bytes

FLOAT_NAMES = {math.inf: "Infinity", -math.inf: "-Infinity"}


def json_safe(value: Any) -> Any:
    """``value`` made of None, bool, int, finite float, str, list and dict only."""
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return FLOAT_NAMES.get(value, float(value))
    if isinstance(value, str):
        return text_bytes(value).decode("utf-8", "replace")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, dict):
        return {json_safe(str(key)): json_safe(item) for key, item in value.items()}
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return json_safe(tolist())
    return json_safe(str(value))
