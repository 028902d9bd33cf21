"""A plugin's Python source read without running it: its files, their syntax, the plugin
classes they define (``code.read_code``). Both sides need it: the daemon's validation
(``iochost.validate``) and the probe that imports the plugin in a child
(``iochost.worker.probe``), so it sits below both.
"""
