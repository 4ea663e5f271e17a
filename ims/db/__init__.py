"""Persistence: SQLAlchemy models, sessions, repository functions, migrations."""
