"""iocmng 2.7.9's HOWTO 07-10 and 16 and its MANUAL's sections, as an iocmng user follows them, under iochost:
actuators, wired outputs, noise against a parameter, registered functions, triggered tasks, the legacy pvs key, the
TaskBase API, rules, latches and safe_eval.

The fixtures are in tests/fixtures/iocmng-docs (INVENTORY.md), run with `iochost run` against a real device soft
IOC; the helpers are in test_iocmng_docs.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy
import pytest

from conftest import Processes, wait_for
from test_iocmng_docs import (
    device,  # noqa: F401 - a fixture
    put,
    run_fixture,
    until,
)


@pytest.mark.slow
def test_howto_07_actuator_writes_the_device(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """HOWTO §7: the rule's actuator writes 0 to the device PV of the wired input rf_on."""
    put(ca, "DOCDEV:RF", 1)
    put(ca, "DOCDEV:CHILLER", 1)
    run_fixture("howto-07-actuators", tmp_path, processes, ca, "DOCH7:RF")
    until(ca, "DOCH7:RF:rf_on", 1)
    assert ca.caget("DOCH7:RF:ACTED") == 0
    put(ca, "DOCDEV:CHILLER", 0)
    until(ca, "DOCDEV:RF", 0)
    until(ca, "DOCH7:RF:ACTED", 0)  # rf_on read back as 0: the condition is gone


@pytest.mark.slow
def test_howto_08_wired_output_follows_rules(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """HOWTO §8: any_of() over polled trigger inputs; the wired output's values (its default 1,
    the rule's 0) are forwarded to the device PV."""
    for axis in ("AX_A", "AX_B", "AX_C"):
        put(ca, f"DOCDEV:{axis}", 0)
    put(ca, "DOCDEV:GATE", 5)
    run_fixture("howto-08-motion-interlock", tmp_path, processes, ca, "DOCH8:GATE")
    until(ca, "DOCDEV:GATE", 1)
    put(ca, "DOCDEV:AX_B", 1)
    until(ca, "DOCH8:GATE:IN_MOTION", 1)
    until(ca, "DOCDEV:GATE", 0)
    put(ca, "DOCDEV:AX_B", 0)
    until(ca, "DOCH8:GATE:IN_MOTION", 0)
    until(ca, "DOCDEV:GATE", 1)


@pytest.mark.slow
def test_howto_09_noise_against_a_parameter(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """HOWTO §9: rms/std/mean of a buffer, a rule comparing std() with a parameter. The input
    polls each 0.2 s cycle into 25 samples: a new value shares the buffer with the old one for
    24 cycles (std over 0.5 for 2s and 5s mixed from 1 to 24 fives), then fills it."""
    put(ca, "DOCDEV:NOISE", 2.0)
    run_fixture("howto-09-noise", tmp_path, processes, ca, "DOCH9:NOISE")
    until(ca, "DOCH9:NOISE:adc_std", 0.0)
    until(ca, "DOCH9:NOISE:adc_rms", 2.0)
    until(ca, "DOCH9:NOISE:adc_mean", 2.0)
    assert ca.caget("DOCH9:NOISE:noisy") == 0
    put(ca, "DOCDEV:NOISE", 5.0)
    until(ca, "DOCH9:NOISE:noisy", 1)
    until(ca, "DOCH9:NOISE:adc_mean", 5.0, timeout=30)
    until(ca, "DOCH9:NOISE:noisy", 0)


@pytest.mark.slow
def test_howto_10_registered_functions(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """HOWTO §10, MANUAL §15: functions registered at import and in initialize() used in
    transforms, inside length()."""
    put(ca, "DOCDEV:FSIG", 0.5)
    run_fixture("howto-10-custom-functions", tmp_path, processes, ca, "DOCH10:FN")
    until(ca, "DOCH10:FN:inside", 4, timeout=30)
    until(ca, "DOCH10:FN:width", 0.0)
    until(ca, "DOCH10:FN:half", 0.25)
    put(ca, "DOCDEV:FSIG", 1.5)
    until(ca, "DOCH10:FN:inside", 0, timeout=30)
    until(ca, "DOCH10:FN:half", 0.75)


@pytest.mark.slow
def test_howto_16_triggered_task(tmp_path: Path, processes: Processes, ca: Any) -> None:
    """HOWTO §16: RUN=1 calls triggered(), whose set_pv lands. Its set_message() texts do not
    stay: iocmng 2.7.9 itself writes its own MESSAGE after triggered() returns, and after 2 s
    "Ready for trigger" with STATUS INIT (iocmng/base/task.py, _trigger_wrapper), where both
    end up; that is asserted."""
    run_fixture("howto-16-triggered", tmp_path, processes, ca, "DOCH16:CAL")
    put(ca, "DOCH16:CAL:RUN", 1)
    until(ca, "DOCH16:CAL:GAIN", 2.5)
    until(ca, "DOCH16:CAL:MESSAGE", "Ready for trigger")
    until(ca, "DOCH16:CAL:STATUS", 0)  # INIT
    put(ca, "DOCH16:CAL:RUN", 1)
    until(ca, "DOCH16:CAL:GAIN", 5.0)


# -- MANUAL --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_manual_05_legacy_pvs_key(tmp_path: Path, processes: Processes, ca: Any) -> None:
    """MANUAL §5: ``pvs:`` in place of ``arguments:``."""
    run_fixture("manual-05-legacy-pvs", tmp_path, processes, ca, "DOCM5:OLD")
    until(ca, "DOCM5:OLD:ECHO", 1.25)


@pytest.mark.slow
def test_manual_06_taskbase_api(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """MANUAL §6/§9/§12: the aliases, attributes, set_message's 39 characters, set_pv on a
    wired output forwarded, link_put to a wired output's device PV, CONN_INP and CONN_OUT."""
    put(ca, "DOCDEV:API_SRC", 8.0)
    put(ca, "DOCDEV:API_PUSH", 0)
    run_fixture("manual-06-taskbase-api", tmp_path, processes, ca, "DOCM6:TOUR")
    until(ca, "DOCM6:TOUR:IDENT", "TOUR continuous constructed")  # the --name given
    until(ca, "DOCM6:TOUR:PREFIX_SEEN", "DOCM6:TOUR")
    until(ca, "DOCM6:TOUR:DOUBLE_KNOB", 6.0)
    until(ca, "DOCM6:TOUR:READBACK", 6.0)
    until(ca, "DOCM6:TOUR:KNOB_SHADOW", 3.0)
    until(ca, "DOCM6:TOUR:FLAGS", "11 True")
    until(ca, "DOCDEV:API_FWD", 3)
    until(ca, "DOCM6:TOUR:MESSAGE", "a status message that is much longer than forty characters"[:39])
    put(ca, "DOCM6:TOUR:KNOB", 4.0)
    until(ca, "DOCDEV:API_FWD", 4)
    put(ca, "DOCM6:TOUR:PUSH", 1)
    until(ca, "DOCDEV:API_PUSH", 7)
    assert [int(x) for x in numpy.atleast_1d(ca.caget("DOCM6:TOUR:CONN_INP"))] == [1]
    assert [int(x) for x in numpy.atleast_1d(ca.caget("DOCM6:TOUR:CONN_OUT"))] == [1, 1]


@pytest.mark.slow
def test_manual_10_rules(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """MANUAL §10: or/and/not, any_of/all_of/count_true, a buffer's mean against a parameter,
    message_pv, actuators on a wired input."""
    for pv, value in (("R_TEMP", 0.0), ("R_PRESS", 0.0), ("HEATER", 3.0)):
        put(ca, f"DOCDEV:{pv}", value)
    run_fixture("manual-10-rules", tmp_path, processes, ca, "DOCM10:RULES")
    until(ca, "DOCM10:RULES:DEAD", 1)
    put(ca, "DOCDEV:R_TEMP", 60.0)
    put(ca, "DOCDEV:R_PRESS", 1.5)
    until(ca, "DOCM10:RULES:DEAD", 0)
    until(ca, "DOCM10:RULES:VOTES", 1)  # 60 > 10, 1.5 > 1, heater 3 > 0
    until(ca, "DOCM10:RULES:MIXED", 0)  # all three non-zero
    put(ca, "DOCDEV:R_PRESS", 3.0)  # OVER: pressure > 2 -> heater actuated to 0
    until(ca, "DOCM10:RULES:ALARM", 1)
    until(ca, "DOCDEV:HEATER", 0.0)
    wait_for(lambda: ca.caget("DOCM10:RULES:NOTE").endswith(" - limit hit"), timeout=10, what="OVER's message")
    until(ca, "DOCM10:RULES:MIXED", 1)  # heater 0 now, and the mean of core_t over 50


@pytest.mark.slow
def test_manual_11_latch(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """MANUAL §11: rise (with alarm_on MAJOR), fall, any on a float, the "0->1" alias; CLEAR
    releases them to rule_defaults."""
    put(ca, "DOCDEV:LT_LEVEL", 0.0)
    run_fixture("manual-11-latch", tmp_path, processes, ca, "DOCM11:LATCH")
    until(ca, "DOCM11:LATCH:HEALTHY", 1)
    put(ca, "DOCDEV:LT_LEVEL", 20.0)
    until(ca, "DOCM11:LATCH:TRIPPED", 1)
    put(ca, "DOCDEV:LT_LEVEL", 0.0)
    until(ca, "DOCM11:LATCH:level", 0.0)
    cycles = ca.caget("DOCM11:LATCH:CYCLE_COUNT")
    wait_for(lambda: ca.caget("DOCM11:LATCH:CYCLE_COUNT") > cycles + 2, timeout=10, what="cycles without the rule")
    tripped = ca.caget("DOCM11:LATCH:TRIPPED", format=ca.FORMAT_TIME)
    assert (tripped, tripped.severity) == (1, 2)
    assert ca.caget("DOCM11:LATCH:HEALTHY") == 0 and ca.caget("DOCM11:LATCH:WARNED") == 1
    assert ca.caget("DOCM11:LATCH:PEAK") == pytest.approx(99.5)
    put(ca, "DOCM11:LATCH:CLEAR", 1)
    until(ca, "DOCM11:LATCH:TRIPPED", 0)
    until(ca, "DOCM11:LATCH:HEALTHY", 1)
    until(ca, "DOCM11:LATCH:PEAK", 0.0)
    until(ca, "DOCM11:LATCH:WARNED", 0)


@pytest.mark.slow
def test_manual_11_latched_outputs_inspected(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """MANUAL §11 "Inspecting Latch State": self._latched_outputs names the latched outputs
    and is empty again after CLEAR."""
    put(ca, "DOCDEV:LS_LEVEL", 0.0)
    run_fixture("manual-11-latch-state", tmp_path, processes, ca, "DOCM11:SEEN")
    until(ca, "DOCM11:SEEN:LOW_SEEN", 1)
    put(ca, "DOCDEV:LS_LEVEL", 20.0)
    until(ca, "DOCM11:SEEN:LATCHED", "HIGH LOW_SEEN")
    put(ca, "DOCDEV:LS_LEVEL", 0.0)
    until(ca, "DOCM11:SEEN:level", 0.0)
    put(ca, "DOCM11:SEEN:CLEAR", 1)
    until(ca, "DOCM11:SEEN:LATCHED", "")


@pytest.mark.slow
def test_manual_16_safe_eval_api(tmp_path: Path, processes: Processes, ca: Any) -> None:
    """MANUAL §16 "Python API": the three calls it shows, and attribute access refused."""
    run_fixture("manual-16-safe-eval", tmp_path, processes, ca, "DOCM16:EVAL")
    until(ca, "DOCM16:EVAL:REFUSED", 1)
    assert (ca.caget("DOCM16:EVAL:PLAIN"), ca.caget("DOCM16:EVAL:EXTRA")) == (0, 0)
    put(ca, "DOCM16:EVAL:X", 10.0)
    until(ca, "DOCM16:EVAL:PLAIN", 1)
    until(ca, "DOCM16:EVAL:WITH_FN", 1)  # mean(10, 0) = 5 > 0.5
    until(ca, "DOCM16:EVAL:EXTRA", 1)  # 30 > 8

