"""The function library of rule conditions and transforms: iocmng 2.7's names and results.

Statistics accept a scalar or a sequence (a ring buffer ``<name>_buf``), as iocmng's do, so
``mean(temp)`` and ``mean(temp_buf)`` both work. ``builtin_library()`` builds the library;
``LIBRARY`` is the process's one, which iocmng's API (``register``, ``get_registry``) extends
and reads: a plugin module that registers at import time is imported by the validator too,
so its functions are known when its expressions are checked. The engine is handed the
library it evaluates with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any


class FunctionLibrary(Mapping[str, Callable[..., Any]]):
    """Names callable from expressions: a read-only mapping name -> callable, plus ``register``."""

    def __init__(self, functions: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}
        for name, fn in (functions or {}).items():
            self.register(name, fn)

    def register(self, name: str, fn: Callable[..., Any]) -> None:
        """Make ``fn`` callable from expressions as ``name``."""
        if not name.isidentifier():
            raise ValueError(f"function name {name!r} is not an identifier")
        if not callable(fn):
            raise TypeError(f"{name}: {fn!r} is not callable")
        self._functions[name] = fn

    def unregister(self, name: str) -> None:
        """Forget ``name`` (absent: nothing to do)."""
        self._functions.pop(name, None)

    def __getitem__(self, name: str) -> Callable[..., Any]:
        return self._functions[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._functions)

    def __len__(self) -> int:
        return len(self._functions)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (str, bytes)):
        return [value]
    if isinstance(value, Sequence) or hasattr(value, "tolist"):
        return list(value.tolist() if hasattr(value, "tolist") else value)
    return [value]


def _mean(values: Any) -> Any:
    items = _as_list(values)
    return sum(items) / len(items) if items else 0.0


def _variance(values: Any) -> Any:
    items = _as_list(values)
    if len(items) < 2:
        return 0.0
    centre = sum(items) / len(items)
    return sum((x - centre) ** 2 for x in items) / len(items)  # population variance, as iocmng


def _median(values: Any) -> Any:  # an element itself when the count is odd
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
    return [b - a for a, b in zip(items, items[1:], strict=False)]


def _last(values: Any, n: int = 1) -> list[Any]:
    return _as_list(values)[-int(n):]


def _moving_avg(values: Any, window: int | None = None) -> Any:
    items = _as_list(values)
    if window is not None:
        items = items[-int(window):]
    return sum(items) / len(items) if items else 0.0


def _clamp(value: Any, low: Any, high: Any) -> Any:
    return max(low, min(high, value))


def _std(values: Any) -> float:
    return math.sqrt(_variance(values))


def _any_of(*args: Any) -> bool:
    return any(bool(a) for a in args)


def _all_of(*args: Any) -> bool:
    return all(bool(a) for a in args)


def _count_true(*args: Any) -> int:
    return sum(1 for a in args if bool(a))


def _length(values: Any) -> int:
    return len(_as_list(values))


def _sum_of(values: Any) -> Any:
    return sum(_as_list(values))


def builtin_library() -> FunctionLibrary:
    """iocmng 2.7.9's library, as a new FunctionLibrary."""
    return FunctionLibrary({
        "abs": abs, "round": round, "sqrt": math.sqrt, "log": math.log, "exp": math.exp, "pow": pow,
        "floor": math.floor, "ceil": math.ceil, "clamp": _clamp,
        "mean": _mean, "std": _std, "variance": _variance, "median": _median, "rms": _rms, "min": min, "max": max,
        "any_of": _any_of, "all_of": _all_of, "count_true": _count_true,
        "length": _length, "sum_of": _sum_of,
        "diff": _diff, "last": _last, "moving_avg": _moving_avg, "derivative": _diff,
    })


LIBRARY = builtin_library()  # this process's library: what plugins register joins it


def register(name: str, fn: Callable[..., Any]) -> None:
    """iocmng's ``register``: make ``fn`` callable from expressions as ``name`` in this process."""
    LIBRARY.register(name, fn)


def get_registry() -> dict[str, Callable[..., Any]]:
    """iocmng's ``get_registry``: a copy of this process's library, name -> callable."""
    return dict(LIBRARY)
