"""iocmng 2.7's declarative tasks as pure logic: the engine that evaluates a plugin's
transforms, rules and latches against values (``engine``), in the expression language of
``iochost.rule_language``. The worker feeds the engine and applies its decisions
(``worker/wiring.py``); nothing here does I/O."""
