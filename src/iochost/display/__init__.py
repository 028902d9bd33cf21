"""Phoebus displays generated with pvi: one per plugin (``plugin``), the daemon's index
(``index``), and the files kept in DATA_DIR/displays/ (``writer``)."""
