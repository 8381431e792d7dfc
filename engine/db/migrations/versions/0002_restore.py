"""restore jobs, exports, points' config and verification

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 23:37:38.413239
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "restore_exports",
        sa.Column("name", sa.String(length=191), nullable=False),
        sa.Column("backup_job_id", sa.String(length=191), nullable=False),
        sa.Column("disk_key", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["backup_job_id"],
            ["backup_jobs.id"],
            name=op.f("fk_restore_exports_backup_job_id_backup_jobs"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_restore_exports")),
    )
    with op.batch_alter_table("restore_exports", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_restore_exports_backup_job_id"), ["backup_job_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_restore_exports_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "restore_jobs",
        sa.Column("id", sa.String(length=191), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("backup_job_id", sa.String(length=191), nullable=False),
        sa.Column("vm_name", sa.String(length=255), nullable=False),
        sa.Column("target", sa.String(length=1024), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("vm_moref", sa.String(length=255), nullable=True),
        sa.Column("vm_path", sa.String(length=1024), nullable=True),
        sa.Column("bytes_transferred", sa.BigInteger(), nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["backup_job_id"],
            ["backup_jobs.id"],
            name=op.f("fk_restore_jobs_backup_job_id_backup_jobs"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_restore_jobs_node_id_nodes"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_restore_jobs")),
    )
    with op.batch_alter_table("restore_jobs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_restore_jobs_backup_job_id"), ["backup_job_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_restore_jobs_status"), ["status"], unique=False)

    op.create_table(
        "restore_disks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("restore_job_id", sa.String(length=191), nullable=False),
        sa.Column("disk_key", sa.Integer(), nullable=False),
        sa.Column("source_disk_key", sa.Integer(), nullable=False),
        sa.Column("source_path", sa.String(length=1024), nullable=False),
        sa.Column("target", sa.String(length=1024), nullable=True),
        sa.Column("export_name", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("bytes_zero", sa.BigInteger(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["restore_job_id"],
            ["restore_jobs.id"],
            name=op.f("fk_restore_disks_restore_job_id_restore_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_restore_disks")),
        sa.UniqueConstraint(
            "restore_job_id", "disk_key", name=op.f("uq_restore_disks_restore_job_id")
        ),
    )
    with op.batch_alter_table("restore_disks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_restore_disks_restore_job_id"), ["restore_job_id"], unique=False
        )

    with op.batch_alter_table("backup_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "verification", sa.String(length=16), nullable=False, server_default="unverified"
            )
        )
        batch_op.add_column(sa.Column("verification_detail", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("vm_config", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backup_jobs", schema=None) as batch_op:
        batch_op.drop_column("vm_config")
        batch_op.drop_column("verification_detail")
        batch_op.drop_column("verification")

    with op.batch_alter_table("restore_disks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_restore_disks_restore_job_id"))

    op.drop_table("restore_disks")
    with op.batch_alter_table("restore_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_restore_jobs_status"))
        batch_op.drop_index(batch_op.f("ix_restore_jobs_backup_job_id"))

    op.drop_table("restore_jobs")
    with op.batch_alter_table("restore_exports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_restore_exports_expires_at"))
        batch_op.drop_index(batch_op.f("ix_restore_exports_backup_job_id"))

    op.drop_table("restore_exports")
