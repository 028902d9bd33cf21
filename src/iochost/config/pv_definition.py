"""PVDef: one PV declared in config.yaml; the worker turns it into one record (worker/records.py).

Its fields are ``PVFields`` (config/pv_fields.py); here they are checked together: iocmng's
forms read (config/iocmng_forms.py), every cross-field problem raised at once
(config/pv_checks.py), then the defaults filled in.
"""

from __future__ import annotations

from pydantic import model_validator

from iochost.config.iocmng_forms import as_iocmng, fold_alarm_on
from iochost.config.issues import SchemaProblems
from iochost.config.pv_checks import pv_problems
from iochost.config.pv_fields import DEFAULT_ONAM, DEFAULT_PREC, DEFAULT_ZNAM, PVFields


class PVDef(PVFields):
    """One declared PV; the worker turns it into one record (see worker/records.py)."""

    @model_validator(mode="after")
    def _consistent(self) -> PVDef:
        """iocmng's forms read, every cross-field problem raised at once, then the defaults
        filled in, so the model holds what the record gets."""
        given = set(self.model_fields_set)
        as_iocmng(self, given)
        problems = pv_problems(self, given)
        if problems:
            raise SchemaProblems(problems)
        if self.type == "float" and self.prec is None:
            self.prec = DEFAULT_PREC
        if self.type == "bool":
            self.znam = DEFAULT_ZNAM if self.znam is None else self.znam
            self.onam = DEFAULT_ONAM if self.onam is None else self.onam
        fold_alarm_on(self)
        return self
