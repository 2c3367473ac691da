"""The composition root: every `likeness` process builds its storage, engine and front ends here, and nowhere else.

- ``store``: open the database (migrating SQLite, requiring migrations on PostgreSQL) and the blob store.
- ``engine``: the backends, router, dispatcher and metrics over the store (``open_engine``).
- ``frontends``: the Telegram and Discord front ends for the configured tokens.
- ``process``: what both long-running processes share (signals, the health and metrics server).
- ``service``: ``likeness run`` (``run_service``): front ends, dispatcher, delivery, health, retention, reconcile.
- ``worker``: ``likeness worker`` (``run_worker``): the engine and storage parts only.
- ``admin``: ``likeness admin`` (``open_admin``): the admin use cases for the shell.
"""
