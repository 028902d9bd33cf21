"""iocmng 2.7's expression language and its function library: pure logic, below the config
schema, which checks every expression with it. The engine that evaluates them against live
values is the worker's (worker/engine.py)."""
