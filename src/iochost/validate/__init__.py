"""Staged plugin validation: files, config, syntax, class discovery, import, inheritance.

The stages that read the source without running it are ``iochost.plugin_source``.

``pipeline.validate_plugin`` runs the stages and returns an ``iochost.report``; the daemon
and ``iochost validate`` share it. ``import_check`` starts the subprocess that runs plugin
code, ``iochost.worker.probe``: worker-side code (it builds records with softioc), never
imported by the daemon.
"""
