"""A plugin's exception as its author reads it: the traceback with the plugin's own frames only."""

from __future__ import annotations

import traceback
from pathlib import Path


def plugin_traceback(exc: BaseException, plugin_dir: Path | None) -> str:
    """``exc``'s traceback with the plugin's own frames only (files under ``plugin_dir``), for
    chained exceptions too: not the host's call into it nor library internals, so what an
    operator reads first is the plugin's line. The whole traceback is in the plugin's log."""
    report = traceback.TracebackException.from_exception(exc)
    if plugin_dir is not None:
        root = plugin_dir.resolve()
        seen: set[int] = set()
        pending = [report]
        while pending:
            part = pending.pop()
            if id(part) in seen:
                continue
            seen.add(id(part))
            part.stack = traceback.StackSummary.from_list(
                [frame for frame in part.stack if _inside(frame.filename, root)])
            pending += [chained for chained in (part.__cause__, part.__context__) if chained is not None]
    return "".join(report.format())


def _inside(filename: str, root: Path) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(root)
    except (OSError, ValueError):
        return False
