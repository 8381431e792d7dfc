"""Alembic environment: runs the migrations on the URL the engine hands it."""

from __future__ import annotations

from alembic import context

from engine.db.models import Base
from engine.db.session import make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None

connectable = make_engine(url)

with connectable.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=url.startswith("sqlite"),
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
connectable.dispose()
