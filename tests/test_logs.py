"""The daemon's text log keeps one record on one line, whatever text from the network a
message carries (the end-to-end cases, a control PV's write and a plugin's message, are in
test_epics_control_names.py)."""

from __future__ import annotations

import logging
import sys

from hypothesis import given
from hypothesis import strategies as st

from iochost.logs import TextFormatter, escape_controls

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


@given(st.text())
def test_escaped_text_is_one_printable_line(text: str) -> None:
    escaped = escape_controls(text)
    assert escaped.isprintable() and len(escaped.splitlines()) <= 1
    assert escaped == "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


@given(st.text().filter(str.isprintable))
def test_printable_text_is_left_as_it_is(text: str) -> None:
    assert escape_controls(text) == text


def test_escapes_are_pythons() -> None:
    assert escape_controls("a\nb\r\tc\x1b[2J\x85\u2028\x00") == "a\\nb\\r\\tc\\x1b[2J\\x85\\u2028\\x00"


@given(st.text(), st.text())
def test_a_record_is_one_line_and_only_its_traceback_adds_lines(message: str, arg: str) -> None:
    record = logging.LogRecord("iochost.supervisor", logging.WARNING, __file__, 1, "epics: %s %s", (message, arg), None)
    line = TextFormatter(FORMAT).format(record)
    assert len(line.splitlines()) == 1 and line.endswith(escape_controls(f"epics: {message} {arg}"))
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("iochost", logging.ERROR, __file__, 1, "bad\n%s", ("x",), sys.exc_info())
    first, *traceback = TextFormatter(FORMAT).format(failed).splitlines()
    assert first.endswith("iochost: bad\\nx") and traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == "ValueError: boom"
