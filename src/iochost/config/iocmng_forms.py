"""A PV's forms iocmng 2.7.9 accepts, held as what they mean there (see PvArgumentSpec in
iocmng's plugin_spec.py): what iocmng silently ignores is dropped with a warning at its key,
and ``alarm_on:`` becomes the alarm field it sets.
"""

from __future__ import annotations

from pydantic import ValidationError

from iochost.config.alarm_fields import LimitAlarm, StateAlarm
from iochost.config.issues import Problems, SchemaProblems, problems_from_pydantic
from iochost.config.pv_fields import PVFields

ALARM_ON_HIGH = 100  # iocmng's default high:, the limit alarm_on raises at on a float/int PV without one
# keys of iocmng's PV types that its string, bool and int records do not use
UNUSED_KEYS = {"string": ("unit", "prec", "low", "high", "znam", "onam"),
               "bool": ("unit", "prec", "low", "high"), "int": ("prec", "znam", "onam"),
               "float": ("znam", "onam")}


def as_iocmng(pv: PVFields, given: set[str]) -> None:
    """Read ``pv`` (whose fields ``given`` were written) as iocmng does, before its checks."""
    if "type" not in given:
        pv.warn(("type",), "not given: a float PV, as iocmng makes it; give type: to say so")
    if pv.link == "":
        pv.ignore("link", "an empty link wires nothing (iocmng reads it as no link)")
    spelt = "link_mode"
    if pv.mode is not None:
        if "link_mode" not in given:
            pv.link_mode, spelt = pv.mode, "mode"
            given.add("link_mode")
        elif pv.mode != pv.link_mode:
            pv.warn(("mode",), f"ignored: link_mode: {pv.link_mode} is given too and wins")
        pv.mode = None
    if pv.link is None:
        for key, default in (("link_mode", "poll"), ("poll_rate", None), ("trigger", False)):
            if key in given and getattr(pv, key) != default:
                pv.ignore(key, "only a wired PV (one with link:) has a link to read", default,
                          spelt=spelt if key == "link_mode" else key)
    elif pv.poll_rate is not None and pv.link_mode != "poll":
        pv.ignore("poll_rate", "a link_mode: monitor link is updated on every change, not polled")
    if pv.poll_rate == 0:  # iocmng: no wait between polls, i.e. every cycle, as without it
        pv.poll_rate = None
    if pv.buffer_size is not None and pv.buffer_size <= 0:  # iocmng: no buffer
        if pv.buffer_size < 0:
            pv.warn(("buffer_size",), f"{pv.buffer_size} keeps no buffer, as 0 does")
        pv.buffer_size = None
    if "latch_dir" in given and not pv.latch:
        pv.ignore("latch_dir", "only a latch: true output latches", "rise")
    if pv.alarm_on is not None and pv.type == "string":
        pv.ignore("alarm_on", "a string PV has no state to raise an alarm on")
    for key in UNUSED_KEYS.get(pv.type, ()):
        if key in given and getattr(pv, key) is not None and pv.length is None:
            pv.ignore(key, f"{'an' if pv.type == 'int' else 'a'} {pv.type} PV has no use for it")


def fold_alarm_on(pv: PVFields) -> None:
    """``alarm_on:`` (iocmng 2.7) folded into ``alarm``, so the model holds it once: a bool
    PV's OSV; a float/int PV's HSV with ``high:`` (iocmng's default 100) as HIGH."""
    if pv.alarm_on is None:
        return
    if pv.type == "bool":
        zsv = pv.alarm.zsv if isinstance(pv.alarm, StateAlarm) else None
        pv.alarm, pv.alarm_on = StateAlarm(zsv=zsv, osv=pv.alarm_on), None
        return
    high = pv.high
    if high is None:
        high = ALARM_ON_HIGH
        pv.warn(("alarm_on",), f"without high: it alarms at {high} and above (iocmng's "
                "default high); give high: to choose the limit")
    limits = pv.alarm.model_dump(exclude_none=True) if isinstance(pv.alarm, LimitAlarm) else {}
    try:
        pv.alarm = LimitAlarm(**limits, high=high, hsv=pv.alarm_on)
    except ValidationError as exc:  # each problem at the key written: high: (alarm_on:
        problems: Problems = []    # when it is iocmng's default) or alarm.<limit>
        for path, message in problems_from_pydantic(exc, LimitAlarm):
            if path != ("high",):
                path = ("alarm",) + path
            elif pv.high is None:
                path = ("alarm_on",)
            if pv.high is None:
                message = message.replace(f"high ({high:g})", f"alarm_on's high ({high:g}, iocmng's "
                                          "default without high:)")
            problems.append((path, message))
        raise SchemaProblems(problems) from None
    pv.alarm_on = None
