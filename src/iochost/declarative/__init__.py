"""iocmng 2.7's declarative layer: the expression language, its function library, and the
engine that turns wired inputs into outputs (transforms, rules, latches). Pure logic: the
worker feeds it values and applies what it decides (see worker/links.py, worker/host.py)."""
