"""Alembic environment: the engine comes from the caller's Config."""

from alembic import context

from ims.db import job_models, metadef_models  # noqa: F401  (registers their tables)
from ims.db.models import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    context.run_migrations()
