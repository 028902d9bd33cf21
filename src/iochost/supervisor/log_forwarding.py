"""Plugins' log records into the daemon's log, each plugin within its line budget."""

from __future__ import annotations

import logging
import time

from iochost.budget import LineBudget
from iochost.contract import messages
from iochost.settings import Settings

log = logging.getLogger("iochost.supervisor")

MAX_FORWARDED_CHARS = 4000  # of one plugin log record in the daemon's log


class LogForwarding:
    """One ``LineBudget`` per plugin: a plugin that floods its pipe cannot flood the daemon's log."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._budgets: dict[str, LineBudget] = {}

    def forward(self, name: str, message: messages.Log) -> None:
        """A plugin's log record into the daemon's log, within the plugin's line budget.

        The worker already holds to ``plugin_log_rate``; this enforces it (with room for the
        worker's own "not forwarded" notes) against a plugin that writes to the pipe itself."""
        budget = self._budgets.get(name)
        limit = self.settings.plugin_log_limit
        if budget is None and limit is not None:
            budget = self._budgets[name] = LineBudget(limit[0] * 2, limit[1])
        if budget is not None and not budget.allow(time.monotonic()):
            return
        level = logging.getLevelName(message.level)
        text = message.message if len(message.message) <= MAX_FORWARDED_CHARS else (
            message.message[:MAX_FORWARDED_CHARS] + f"... [{len(message.message)} characters; all in the plugin's log]")
        logging.getLogger(f"iochost.plugin.{name}").log(level if isinstance(level, int) else logging.INFO, "%s", text)

    def report_dropped(self, now: float) -> None:
        """Log, per plugin, how many lines its budget dropped since the last report."""
        for name, budget in list(self._budgets.items()):
            dropped = budget.summary(now)
            if dropped:
                log.warning("%s: %d log lines from the worker dropped (over plugin_log_rate %s)",
                            name, dropped, self.settings.plugin_log_rate)

    def forget(self, name: str) -> None:
        """A deleted plugin's budget goes with it."""
        self._budgets.pop(name, None)
