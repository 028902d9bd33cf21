"""Sizes of EPICS record fields that more than one layer must respect.

The config schema refuses a string value that does not fit, the worker cuts what a plugin
writes, and the SDK cuts MESSAGE: all to the same length, defined once here, below all of
them (the SDK, which plugin authors import, should not pull in the config schema). The
limits only the schema checks stay in ``config/schema.py``.
"""

STRING_LENGTH = 39  # stringin/stringout VAL is char[40], the NUL included
