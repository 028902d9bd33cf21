"""The expression language of iocmng 2.7's transforms and rules: compiling and checking an
expression (``expressions``) and the functions it may call (``functions``). Below the
config schema, which checks every expression with it; the declarative engine
(``iochost.declarative``) and the worker evaluate with it. Pure: no I/O."""
