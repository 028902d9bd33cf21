"""The supervisor <-> worker contract: the one definition both processes import.

``messages`` (the line protocol on the worker's pipes, sans-I/O), ``worker_spec`` (how to
run one plugin) and ``exits`` (what a worker's exit code means). Nothing here imports
softioc, asyncio or the supervisor.
"""
