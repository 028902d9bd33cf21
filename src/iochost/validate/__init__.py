"""Staged plugin validation: files, config, syntax, class discovery, import, inheritance.

``pipeline.validate_plugin`` runs the stages and returns an ``iochost.report``; the daemon
and ``iochost validate`` share it. ``probe`` is the subprocess that runs plugin code.
"""
