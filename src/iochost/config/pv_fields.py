"""The fields of one PV declared in config.yaml (``PVFields``), each checked on its own, and
what they mean for the record (its value as the builder takes it, its text size).

Strict (no "1.0" -> 1.0, no 1 -> True) and closed to unknown keys, because a misspelt
``unti:`` or a quoted number silently ignored is a PV that looks right in Phoebus and is
not. ``alarm:`` is config/alarm_fields.py; the checks across fields (config/pv_checks.py)
and iocmng's forms (config/iocmng_forms.py) read a ``PVFields``, and ``PVDef``
(config/pv_definition.py) runs them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator

from iochost.config.alarm_fields import LimitAlarm, Severity, StateAlarm, parse_alarm
from iochost.config.issues import Problems
from iochost.config.record_fields import FieldNumber, fits
from iochost.record_sizes import CHOICE_LENGTH, DESC_LENGTH, EGU_LENGTH, STRING_LENGTH

PVType = Literal["float", "int", "string", "bool", "enum"]
PV_TYPES: tuple[str, ...] = ("float", "int", "string", "bool", "enum")
TYPE_ALIASES = {"str": "string", "boolean": "bool", "double": "float", "integer": "int", "long": "int"}
DEFAULT_PREC = 3
DEFAULT_ZNAM, DEFAULT_ONAM = "Off", "On"
# A link target: a record name, optionally with a field (``DEV:TEMP.HIGH``).
LINK_NAME_RE = re.compile(r"^[A-Za-z0-9_\-+:\[\]<>;]+(\.[A-Z][A-Z0-9]{0,3})?$")


class PVFields(BaseModel):
    """One declared PV's fields, each valid on its own (``PVDef`` checks them together)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: PVType = Field(default="float", description="iocmng's default: float (with a warning)")
    value: Any = Field(default=None, description="the value the record starts with (autosave may restore "
                       "an input's last one)")
    unit: Annotated[str, fits(EGU_LENGTH)] | None = Field(default=None, description="engineering units (EGU)")
    prec: int | None = Field(default=None, ge=0, le=17, description="digits a display shows after the point "
                             "(PREC); default 3")
    low: FieldNumber | None = Field(default=None, description="display low limit (LOPR) and, on an input, "
                                    "drive low limit (DRVL: a lower write is held to it)")
    high: FieldNumber | None = Field(default=None, description="display high limit (HOPR) and, on an input, "
                                     "drive high limit (DRVH: a higher write is held to it)")
    znam: Annotated[str, fits(CHOICE_LENGTH)] | None = Field(default=None, description="a bool PV's text for 0 "
                                                             "(ZNAM); default Off")
    onam: Annotated[str, fits(CHOICE_LENGTH)] | None = Field(default=None, description="a bool PV's text for 1 "
                                                             "(ONAM); default On")
    description: Annotated[str, fits(DESC_LENGTH)] | None = Field(default=None, description="the record's "
                                                                  "description (DESC), shown by displays")
    choices: list[str] | None = Field(default=None, description="an enum PV's states, in order (at most 16)")
    length: int | None = Field(default=None, ge=1, description="a waveform of this many elements (float, int), "
                               "or the longest text a string PV holds")
    alarm: LimitAlarm | StateAlarm | dict[str, str] | None = None
    alarm_on: Severity | None = Field(default=None, description="iocmng 2.7: osv of a bool PV, hsv of a "
                                      "float/int PV (with high: as the limit, 100 if not set)")
    link: str | None = Field(default=None, description="iocmng 2.7: the external PV this one is wired to")
    link_mode: Literal["monitor", "poll"] = "poll"
    mode: Literal["monitor", "poll"] | None = Field(default=None, exclude=True, description="iocmng: link_mode's "
                                                    "other name (link_mode wins when both are given)")
    poll_rate: float | None = Field(default=None, ge=0, description="seconds between polls; default (or 0): "
                                    "every cycle")
    trigger: bool = Field(default=False, description="a change calls on_input_changed() (always in reactive mode)")
    buffer_size: int | None = Field(default=None, le=100_000, description="ring buffer <name>_buf; 0: none")
    latch: bool = Field(default=False, description="an output a rule set keeps that value until CLEAR")
    latch_dir: Literal["rise", "fall", "any"] = "rise"
    mdel: FieldNumber | None = Field(default=None, ge=0, description="monitor deadband (MDEL)")
    adel: FieldNumber | None = Field(default=None, ge=0, description="archive deadband (ADEL)")
    autosave: bool = Field(default=True, description="inputs: restore the last value on restart")

    _warnings: Problems = PrivateAttr(default_factory=list)  # keys accepted but ignored, as iocmng ignores them

    @field_validator("alarm", mode="before")
    @classmethod
    def _alarm(cls, value: Any, info: ValidationInfo) -> Any:
        """Parse ``alarm:`` by the PV's type (declared before it, so already validated)."""
        kind = info.data.get("type")
        if value is None or kind is None:
            return None
        return parse_alarm(value, kind, waveform=info.data.get("length") is not None,
                           choices=info.data.get("choices") or [])

    @field_validator("alarm_on", mode="before")
    @classmethod
    def _no_alarm_on(cls, value: Any) -> Any:
        """``alarm_on: ""`` is iocmng's documented default: no alarm."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("latch_dir", "link_mode", "mode", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        """iocmng accepts any case and ``0->1`` / ``1->0`` for rise / fall."""
        if isinstance(value, str):
            value = value.strip().lower()
            return {"0->1": "rise", "1->0": "fall"}.get(value, value)
        return value

    @field_validator("link")
    @classmethod
    def _link_name(cls, value: str | None) -> str | None:
        if value and not LINK_NAME_RE.fullmatch(value):  # "": no link, as iocmng reads it (see as_iocmng)
            raise ValueError(f"{value!r} is not a PV name (record name, optionally .FIELD)")
        return value

    @field_validator("type", mode="before")
    @classmethod
    def _type_name(cls, value: Any) -> Any:
        valid = ", ".join(PV_TYPES)
        if not isinstance(value, str):
            raise ValueError(f"PV type must be one of {valid}, got {value!r}")
        name = value.strip().lower()
        name = TYPE_ALIASES.get(name, name)
        if name not in PV_TYPES:
            raise ValueError(f"unknown PV type {value!r}; valid types: {valid}")
        return name

    @property
    def wired(self) -> bool:
        return self.link is not None

    @property
    def is_waveform(self) -> bool:
        return self.type in ("float", "int") and self.length is not None

    @property
    def is_long_string(self) -> bool:
        return self.type == "string" and self.length is not None and self.length > STRING_LENGTH

    @property
    def text_size(self) -> int:
        """The bytes a string PV's value may hold: its ``length`` (a short one is a stringout
        of 39 whose values are kept to it, so what it holds always fits at the next start),
        else a stringin/stringout's 39."""
        return self.length or STRING_LENGTH

    @property
    def key_warnings(self) -> Problems:
        """Keys accepted where iocmng ignores them, each at its path within the PV."""
        return self._warnings

    def warn(self, path: tuple[str, ...], message: str) -> None:
        """Record a warning at ``path`` (config.yaml's line comes from the whole config)."""
        self._warnings.append((path, message))

    def ignore(self, key: str, why: str, default: Any = None, *, spelt: str | None = None) -> None:
        """Accept ``key`` (written as ``spelt``) where iocmng ignores it: a warning, and the
        key back to its default."""
        self.warn((spelt or key,), f"ignored: {why}")
        setattr(self, key, default)

    def initial_value(self) -> Any:
        """The value in the form the record builder takes (enum index, 0/1, padded list)."""
        value = self.value
        if self.is_waveform:
            assert self.length is not None
            cast = float if self.type == "float" else int
            if value is None or not isinstance(value, list):
                return [cast(value or 0)] * self.length
            return [cast(item) for item in value] + [cast(0)] * (self.length - len(value))
        if self.type == "float":
            return float(value or 0.0)
        if self.type == "int":
            return int(value or 0)
        if self.type == "string":
            return value or ""
        if self.type == "bool":
            if isinstance(value, str):
                return int(value == self.onam)
            return int(bool(value))
        choices = self.choices or []
        if isinstance(value, str):
            return choices.index(value)
        return int(value or 0)
