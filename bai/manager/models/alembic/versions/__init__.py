"""The migration scripts, oldest first by revision chain (alembic skips this file)."""
