"""Pure checks of ``iochost.config.calls`` (which called functions the library lacks, and
the warning / start error made of them) and of JobResult's iocmng ``timestamp``; the real
paths (validation, a worker's start over REST) are in test_task_link_state.py."""

from __future__ import annotations

import datetime
from pathlib import Path

from iochost.config import PluginConfig, load_config
from iochost.config.calls import (
    registration_warnings,
    still_unregistered,
    unregistered_calls,
)
from iochost.report import Severity
from iochost.rule_language.functions import get_registry
from iochost.sdk import JobResult

CONFIG = '''\
arguments:
  inputs:
    raw:
      type: float
  outputs:
    out:
      type: float
    flag:
      type: int
transforms:
  - output: out
    expression: "mean(raw) + scaled(raw)"
rules:
  - id: R
    condition: "gate(raw) and scaled(raw) > 1"
    outputs: {flag: 1}
'''


def _config(tmp_path: Path) -> PluginConfig:
    (tmp_path / "config.yaml").write_text(CONFIG)
    return load_config(tmp_path)


def test_every_unknown_call_is_found_in_file_order(tmp_path: Path) -> None:
    config = _config(tmp_path)
    calls = unregistered_calls(config, get_registry())
    assert [(call.path, call.function) for call in calls] == [
        (("transforms", "0", "expression"), "scaled"),
        (("rules", "0", "condition"), "gate"), (("rules", "0", "condition"), "scaled")]
    assert unregistered_calls(config, [*get_registry(), "scaled", "gate"]) == []


def test_the_warnings_and_the_start_error_name_function_expression_and_line(tmp_path: Path) -> None:
    config = _config(tmp_path)
    library = [*get_registry(), "gate"]
    transform, rule = registration_warnings(config, library)
    assert [(w.severity, w.file, w.line) for w in (transform, rule)] == [(Severity.WARNING, "config.yaml", 12),
                                                                          (Severity.WARNING, "config.yaml", 15)]
    assert transform.message.startswith("transforms[0].expression: 'mean(raw) + scaled(raw)' calls scaled()")
    assert rule.message.startswith("rules[0].condition: 'gate(raw) and scaled(raw) > 1' calls scaled()")
    error = still_unregistered(config, library)
    assert error is not None and isinstance(error, NameError)
    assert str(error).startswith("scaled() not registered after initialize() returned (config.yaml:12: "
                                 "transforms[0].expression: 'mean(raw) + scaled(raw)' calls scaled(); "
                                 "config.yaml:15: rules[0].condition:")
    assert still_unregistered(config, [*library, "scaled"]) is None


def test_job_result_is_stamped_as_iocmng_stamps_it() -> None:
    """iocmng's JobResult: ``timestamp`` is datetime.now().isoformat() when it is made (local
    time, no zone), and to_dict() has success, data, message and timestamp."""
    before = datetime.datetime.now()
    result = JobResult(success=True, message="done")
    stamped = datetime.datetime.fromisoformat(result.timestamp)
    assert stamped.tzinfo is None and before <= stamped <= datetime.datetime.now()
    assert result.to_dict() == {"success": True, "data": {}, "message": "done", "timestamp": result.timestamp}
