"""policies and their runs, the queue (queued jobs, their order, rate limit and run;
indexes to read the queue and recent jobs), nodes' served vCenters and capacity, a VM's ESXi host

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 07:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backup_policies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=191), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("schedule", sa.String(length=120), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("includes", sa.Text(), nullable=False),
        sa.Column("excludes", sa.Text(), nullable=False),
        sa.Column("backup_type", sa.String(length=16), nullable=False),
        sa.Column("keep_last", sa.Integer(), nullable=True),
        sa.Column("keep_daily", sa.Integer(), nullable=True),
        sa.Column("keep_weekly", sa.Integer(), nullable=True),
        sa.Column("keep_monthly", sa.Integer(), nullable=True),
        sa.Column("keep_yearly", sa.Integer(), nullable=True),
        sa.Column("notify_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("notify_on_success", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_scheduled_for", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["backup_repositories.id"],
            name=op.f("fk_backup_policies_repository_id_backup_repositories"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup_policies")),
        sa.UniqueConstraint("name", name=op.f("uq_backup_policies_name")),
    )
    op.create_table(
        "policy_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("skipped", sa.Text(), nullable=False),
        sa.Column("retention", sa.Text(), nullable=False),
        sa.Column("notify_error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["backup_policies.id"],
            name=op.f("fk_policy_runs_policy_id_backup_policies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_runs")),
        sa.UniqueConstraint("policy_id", "scheduled_for", name=op.f("uq_policy_runs_policy_id")),
    )
    op.create_index(op.f("ix_policy_runs_policy_id"), "policy_runs", ["policy_id"])
    op.create_index(op.f("ix_policy_runs_status"), "policy_runs", ["status"])
    with op.batch_alter_table("backup_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queue_order", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("policy_run_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_rate_mib", sa.Float(), nullable=True))
        batch_op.create_index("ix_backup_jobs_status_queue_order", ["status", "queue_order"])
        batch_op.create_index("ix_backup_jobs_created_at", ["created_at"])
        batch_op.create_index(batch_op.f("ix_backup_jobs_queue_order"), ["queue_order"])
        batch_op.create_index(batch_op.f("ix_backup_jobs_policy_run_id"), ["policy_run_id"])
        batch_op.create_foreign_key(
            batch_op.f("fk_backup_jobs_policy_run_id_policy_runs"),
            "policy_runs",
            ["policy_run_id"],
            ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("vcenters", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("max_jobs", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_disks", sa.Integer(), nullable=True))
    with op.batch_alter_table("vm_replication_contexts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("esxi_host", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vm_replication_contexts", schema=None) as batch_op:
        batch_op.drop_column("esxi_host")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("max_disks")
        batch_op.drop_column("max_jobs")
        batch_op.drop_column("vcenters")
    with op.batch_alter_table("backup_jobs", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_backup_jobs_policy_run_id_policy_runs"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_backup_jobs_policy_run_id"))
        batch_op.drop_index(batch_op.f("ix_backup_jobs_queue_order"))
        batch_op.drop_index("ix_backup_jobs_created_at")
        batch_op.drop_index("ix_backup_jobs_status_queue_order")
        batch_op.drop_column("max_rate_mib")
        batch_op.drop_column("policy_run_id")
        batch_op.drop_column("queue_order")
    op.drop_index(op.f("ix_policy_runs_status"), table_name="policy_runs")
    op.drop_index(op.f("ix_policy_runs_policy_id"), table_name="policy_runs")
    op.drop_table("policy_runs")
    op.drop_table("backup_policies")
