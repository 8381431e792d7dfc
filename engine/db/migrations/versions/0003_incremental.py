"""incremental backups: a disk's mode, fallback reason and capacity; a job's requested type

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 03:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("backup_disks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("backup_mode", sa.String(length=16), nullable=False, server_default="full")
        )
        batch_op.add_column(sa.Column("fallback_reason", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("capacity_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("backup_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requested_type", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backup_jobs", schema=None) as batch_op:
        batch_op.drop_column("requested_type")
    with op.batch_alter_table("backup_disks", schema=None) as batch_op:
        batch_op.drop_column("capacity_bytes")
        batch_op.drop_column("fallback_reason")
        batch_op.drop_column("backup_mode")
