"""The REST PV gateway (``/api/v1/pvs/*``): get, put and monitor any PV over CA or PVA.

The daemon never loads an EPICS client (cothread, p4p and numpy cost it memory and threads
it does not otherwise need), so the client runs in a child process of its own
(``child.py``, ``python -m iochost.pvgateway.child``) on the plugin SDK's ``pv_client``.
The daemon side (``client.PVGateway``) starts it on first use (``process.py``), speaks JSON
lines with it (``protocol.py``, sans-I/O, the conventions of ``iochost.contract.messages``),
bounds what is in flight, keeps the monitors (``monitors.py``), restarts it when it dies
(monitors included) and ends its process group at shutdown. ``values.py`` makes any value a
PV gives JSON text.
"""
