"""The README.md ``iochost new`` writes: what the plugin does, its PVs, how to run and test it.

Templates are string.Template (``$name``; ``$$`` is a dollar). Placeholders: ``$name`` (plugin
name), ``$Class``, ``$module``, ``$test_module``, ``$PVNAME`` (the name upper-cased, as in PV
names), ``$kind_title``; the writer fills ``$summary``, ``$pv_rows``, ``$defaults``, ``$kind_word``, ``$try_it``.
"""

from __future__ import annotations

from string import Template

README = Template('''\
# $name

$summary

An iochost plugin ($kind_title): iochost runs it as its own soft IOC. PV names are
`{PREFIX}:$PVNAME:{PV}` (prefix `IOCHOST` by default).

## PVs

| PV | direction | type | what it is |
|---|---|---|---|
$pv_rows
Every $kind_word also has the default PVs $defaults.

## Run, validate, test

```bash
iochost validate . --name $name        # the checks the daemon runs; exit 0 and one OK line
iochost run . --name $name             # serve it as a soft IOC in the foreground (Ctrl-C stops it)
python -m pytest tests -q              # runs it with `iochost run` and drives its PVs over CA
```

With `iochost run` serving it, from another terminal (caproto's tools come with iochost;
EPICS base's `caget` and `caput` take the same names):

```bash
export EPICS_CA_ADDR_LIST=127.0.0.1 EPICS_CA_AUTO_ADDR_LIST=NO
$try_it
```

Add it to a daemon with `POST /api/v1/plugins` and `{"name": "$name", "git_url": ...}`.
''')
