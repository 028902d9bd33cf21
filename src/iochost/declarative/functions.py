"""The function library of rule conditions and transforms: iocmng 2.7's names and results.

Statistics accept a scalar or a sequence (a ring buffer ``<name>_buf``), as iocmng's do, so
``mean(temp)`` and ``mean(temp_buf)`` both work. ``register`` extends the library; a
plugin module that registers at import time is imported by the validator too, so its
functions are known when its expressions are checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register(name: str, fn: Callable[..., Any]) -> None:
    """Make ``fn`` callable from expressions as ``name``."""
    if not name.isidentifier():
        raise ValueError(f"function name {name!r} is not an identifier")
    if not callable(fn):
        raise TypeError(f"{name}: {fn!r} is not callable")
    _REGISTRY[name] = fn


def get_registry() -> dict[str, Callable[..., Any]]:
    """A copy of the library: name -> callable."""
    return dict(_REGISTRY)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (str, bytes)):
        return [value]
    if isinstance(value, Sequence) or hasattr(value, "tolist"):
        return list(value.tolist() if hasattr(value, "tolist") else value)
    return [value]


def _mean(values: Any) -> float:
    items = _as_list(values)
    return sum(items) / len(items) if items else 0.0


def _variance(values: Any) -> float:
    items = _as_list(values)
    if len(items) < 2:
        return 0.0
    centre = sum(items) / len(items)
    return sum((x - centre) ** 2 for x in items) / len(items)  # population variance, as iocmng


def _median(values: Any) -> float:
    items = sorted(_as_list(values))
    if not items:
        return 0.0
    mid = len(items) // 2
    return items[mid] if len(items) % 2 else (items[mid - 1] + items[mid]) / 2.0


def _rms(values: Any) -> float:
    items = _as_list(values)
    return math.sqrt(sum(x * x for x in items) / len(items)) if items else 0.0


def _diff(values: Any) -> list[Any]:
    items = _as_list(values)
    return [b - a for a, b in zip(items, items[1:])]


def _last(values: Any, n: int = 1) -> list[Any]:
    return _as_list(values)[-int(n):]


def _moving_avg(values: Any, window: int | None = None) -> float:
    items = _as_list(values)
    if window is not None:
        items = items[-int(window):]
    return sum(items) / len(items) if items else 0.0


for _name, _fn in {
    "abs": abs, "round": round, "sqrt": math.sqrt, "log": math.log, "exp": math.exp, "pow": pow,
    "floor": math.floor, "ceil": math.ceil,
    "clamp": lambda value, low, high: max(low, min(high, value)),
    "mean": _mean, "std": lambda values: math.sqrt(_variance(values)), "variance": _variance,
    "median": _median, "rms": _rms, "min": min, "max": max,
    "any_of": lambda *args: any(bool(a) for a in args),
    "all_of": lambda *args: all(bool(a) for a in args),
    "count_true": lambda *args: sum(1 for a in args if bool(a)),
    "length": lambda values: len(_as_list(values)), "sum_of": lambda values: sum(_as_list(values)),
    "diff": _diff, "last": _last, "moving_avg": _moving_avg, "derivative": _diff,
}.items():
    register(_name, _fn)
