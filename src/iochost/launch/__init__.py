"""Starting workers and validation probes from a pre-imported template (a fork server).

A plain ``python -m iochost.worker`` spends ~0.45 s and ~34 MB of private memory importing
what every worker imports. Instead the daemon keeps one *template* process
(``template.py``) that has imported all of it except softioc (a process forked after
softioc's import aborts: EPICS's thread library refuses to run in a forked child) and no
plugin code or secret. Each fork becomes a *member* (``member.py``) that waits for the one
program it will run. Warm members import softioc first, so a worker starts at EPICS's own
floor; the daemon keeps a small pool of them (``launcher.py``).
What a member can run is named once, by key, in ``targets.py``, which only members import.

Members are forked twice, so that they re-parent to the daemon (a child subreaper) at
birth: the daemon waits for them like for any child, and a dead template loses no worker.
"""
