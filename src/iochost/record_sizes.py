"""Sizes of the EPICS record fields iochost's records have: the one place each is defined.

The config schema refuses a value that does not fit, the worker cuts what a plugin writes
and the SDK cuts MESSAGE: all from these numbers, defined here, below all of them (the SDK,
which plugin authors import, should not pull in the config schema). Text sizes are bytes
without the terminating NUL.
"""

STRING_LENGTH = 39  # stringin/stringout VAL is char[40], the NUL included
LONG_STRING_LENGTH = 32767  # lsi/lso SIZV (the most a long string holds) is an epicsUInt16
DESC_LENGTH = 40  # DESC is char[41]
EGU_LENGTH = 15  # EGU is char[16]
CHOICE_LENGTH = 25  # mbbi/mbbo ZRST..FFST (and bi/bo ZNAM/ONAM) are char[26]
MAX_CHOICES = 16  # mbbi/mbbo have 16 states, ZRST..FFST
INT32 = (-(2**31), 2**31 - 1)  # longin/longout VAL (and an int waveform's elements) is an epicsInt32
