"""Remote provider backends: one module per provider, all sharing the HTTP rules in ``http``."""
