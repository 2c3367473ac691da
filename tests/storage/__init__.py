"""Store tests: the same contract on SQLite and PostgreSQL."""
