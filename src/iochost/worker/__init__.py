"""The per-plugin soft IOC process. Only worker processes import softioc."""
