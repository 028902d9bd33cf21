"""The declarative engine as pure logic: it evaluates with the function library it is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from iochost.config import load_config
from iochost.declarative.engine import Engine
from iochost.rule_language import functions
from iochost.rule_language.functions import FunctionLibrary, builtin_library

CONFIG = """\
parameters: {mode: continuous, interval: 1.0}
pvs:
  inputs:
    level: {type: float}
  outputs:
    tripled: {type: float}
transforms:
  - output: tripled
    expression: "triple(level)"
"""


def test_the_engine_calls_the_library_it_is_given(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    config = load_config(tmp_path, check_functions=False)  # triple() is in no library yet
    library = builtin_library()
    engine = Engine(config, {"level": 2.0}, library)
    assert engine.evaluate().errors == ["transforms[tripled]: NameError: name 'triple' is not defined"]
    library.register("triple", lambda value: 3 * value)  # as initialize() may, after the engine exists
    assert "triple" not in functions.LIBRARY  # the process's library is not the one this engine uses
    assert engine.evaluate().outputs == {"tripled": 6.0}


def test_a_library_refuses_what_expressions_cannot_call() -> None:
    library = FunctionLibrary()
    with pytest.raises(ValueError):
        library.register("not a name", abs)
    with pytest.raises(TypeError):
        library.register("seven", 7)  # type: ignore[arg-type]
    assert builtin_library() is not builtin_library() and "mean" in builtin_library()
