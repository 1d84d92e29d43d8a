"""Alembic's environment and the migration scripts of the manager's schema.

Run them through :mod:`bai.manager.models.migrate`, never by importing these modules.
"""
