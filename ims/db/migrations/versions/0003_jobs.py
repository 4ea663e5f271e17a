"""Jobs: the asynchronous work of the IMS native API.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("job_type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("project_id", sa.String(255)),
        sa.Column("user_id", sa.String(255)),
        sa.Column("request_id", sa.String(255)),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("entities", sa.JSON, nullable=False),
        sa.Column("process_percent", sa.Float, nullable=False),
        sa.Column("current_task", sa.String(255)),
        sa.Column("error_code", sa.String(32)),
        sa.Column("fail_reason", sa.Text),
        sa.Column("worker", sa.String(255)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime),
        sa.Column("begin_time", sa.DateTime),
        sa.Column("end_time", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_jobs_status_heartbeat", "jobs", ["status", "heartbeat_at"])
    op.create_index("ix_jobs_project_id", "jobs", ["project_id"])
