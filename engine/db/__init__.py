"""Database: SQLAlchemy 2 models, sessions and Alembic migrations (SQLite and MariaDB)."""
