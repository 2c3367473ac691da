"""Remote provider backends: one module per provider on the shared job lifecycle (``remote``) and client."""
