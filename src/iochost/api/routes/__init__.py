"""One router per resource: plugins, jobs, the iocmng aliases, health, events, metrics."""
