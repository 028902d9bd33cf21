"""The config.yaml ``iochost new`` writes, one per kind: the PVs and parameters its module uses.

Templates are string.Template (``$name``; ``$$`` is a dollar). Placeholders: ``$name`` (plugin
name), ``$Class``, ``$module``, ``$test_module``, ``$PVNAME`` (the name upper-cased, as in PV
names), ``$kind_title``.
"""

from __future__ import annotations

from string import Template

TASK_CONFIG = Template('''\
# A continuous task: every `interval` seconds execute() reads SETPOINT and publishes OUTPUT.
parameters:
  mode: continuous
  interval: 1.0          # seconds between execute() calls
  gain: 2.0              # your own parameters are free-form: self.parameters["gain"]

pvs:                     # PV names: {PREFIX}:$PVNAME:{PV}
  inputs:                # operators write these (Phoebus, caput)
    SETPOINT:
      type: float
      value: 10.0
      unit: "V"
      prec: 2
      low: 0             # display range, and the drive limits of an input
      high: 100
      description: "Value to scale"
  outputs:               # the task publishes these
    OUTPUT:
      type: float
      value: 0.0
      unit: "V"
      prec: 2
      low: 0
      high: 200
      description: "SETPOINT times gain"
      alarm:             # the record computes its own severity
        high: 150        # MINOR above 150 V
        hihi: 190        # MAJOR above 190 V
''')

TRIGGERED_CONFIG = Template('''\
# A triggered task: an operator writes 1 to RUN and execute() runs once.
parameters:
  mode: triggered

pvs:                     # PV names: {PREFIX}:$PVNAME:{PV}
  inputs:                # operators write these (Phoebus, caput)
    STEP:
      type: float
      value: 1.0
      unit: "mm"
      prec: 2
      low: -10
      high: 10
      description: "Distance moved per RUN"
  outputs:               # the task publishes these
    POSITION:
      type: float
      value: 0.0
      unit: "mm"
      prec: 2
      low: -1000
      high: 1000
      description: "Position after the last move"
      alarm: {low: -900, high: 900}   # MINOR near the ends of travel
    MOVES:
      type: int
      value: 0
      description: "Moves since start"
    LAST_ACTION:
      type: string
      value: ""
''')

JOB_CONFIG = Template('''\
# A job: runs once per RUN=1 (or `POST /api/v1/jobs/$name/run` under the daemon)
# and returns a JobResult.
parameters:
  samples: 5             # your own parameters are free-form: self.parameters["samples"]

pvs:                     # PV names: {PREFIX}:$PVNAME:{PV}
  inputs:                # operators write these (Phoebus, caput)
    SCALE:
      type: float
      value: 1.0
      unit: "V"
      prec: 3
      low: 0
      high: 10
      description: "Scale of each reading"
  outputs:               # the job publishes these
    LAST_MEAN:
      type: float
      value: 0.0
      unit: "V"
      prec: 3
      low: 0
      high: 60
      description: "Mean of the last run"
    RUNS:
      type: int
      value: 0
      description: "Runs since start"
''')

DECLARATIVE_CONFIG = Template('''\
# A declarative task (iocmng 2.7): no Python logic, this file holds it all. Every cycle
# the transforms compute outputs from the inputs, then the rules set outputs by condition.
parameters:
  mode: continuous
  interval: 1.0          # seconds between cycles

arguments:               # PV names: {PREFIX}:$PVNAME:{PV}
  inputs:
    temp:
      type: float
      value: 20.0
      unit: "degC"
      prec: 2
      low: -50
      high: 150
      description: "Temperature"
      buffer_size: 10    # the last 10 values, as temp_buf in expressions
      # Unwired, an operator (or caput) writes it. Wired, it follows another IOC's PV:
      # link: "DEVICE:TEMP"
      # link_mode: monitor   # monitor: pushed on change; poll: read each cycle
    limit:
      type: float
      value: 80.0
      unit: "degC"
      prec: 1
      low: -50
      high: 150
      description: "Alarm above this temperature"
  outputs:
    avg_temp:
      type: float
      value: 0.0
      unit: "degC"
      prec: 2
      low: -50
      high: 150
      description: "Mean of the last 10 temps"
    alarm:
      type: bool
      value: 0
      znam: "OK"
      onam: "OVER"
      latch: true        # stays 1 until CLEAR=1 is written
      alarm_on: MAJOR    # severity MAJOR while 1
      description: "temp went above limit"

transforms:
  - output: avg_temp
    expression: "mean(temp_buf)"

rule_defaults:           # each output's value when no rule fires
  alarm: 0

rules:
  - id: OVER_LIMIT
    condition: "temp > limit"
    message: "temp above limit"
    outputs:
      alarm: 1
''')
