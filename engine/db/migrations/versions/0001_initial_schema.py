"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29 08:39:37.628477
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backup_repositories",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=191), nullable=False),
        sa.Column("repository_type", sa.String(length=32), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup_repositories")),
        sa.UniqueConstraint("name", name=op.f("uq_backup_repositories_name")),
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=191), nullable=False),
        sa.Column("url", sa.String(length=1024), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nodes")),
        sa.UniqueConstraint("name", name=op.f("uq_nodes_name")),
    )
    op.create_table(
        "vmware_credentials",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("credential_name", sa.String(length=255), nullable=False),
        sa.Column("vcenter_host", sa.String(length=255), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("password_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("key_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("thumbprint", sa.String(length=95), nullable=True),
        sa.Column("datacenter", sa.String(length=255), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vmware_credentials")),
        sa.UniqueConstraint("credential_name", name=op.f("uq_vmware_credentials_credential_name")),
    )
    op.create_table(
        "vm_replication_contexts",
        sa.Column("context_id", sa.String(length=191), nullable=False),
        sa.Column("vm_name", sa.String(length=255), nullable=False),
        sa.Column("vmware_vm_id", sa.String(length=255), nullable=False),
        sa.Column("vm_path", sa.String(length=1024), nullable=False),
        sa.Column("vcenter_host", sa.String(length=255), nullable=False),
        sa.Column("datacenter", sa.String(length=255), nullable=False),
        sa.Column("credential_id", sa.Integer(), nullable=True),
        sa.Column("power_state", sa.String(length=32), nullable=True),
        sa.Column("cpu_count", sa.Integer(), nullable=True),
        sa.Column("memory_mb", sa.Integer(), nullable=True),
        sa.Column("guest_os", sa.String(length=255), nullable=True),
        sa.Column("cbt_enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["credential_id"],
            ["vmware_credentials.id"],
            name=op.f("fk_vm_replication_contexts_credential_id_vmware_credentials"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("context_id", name=op.f("pk_vm_replication_contexts")),
    )
    with op.batch_alter_table("vm_replication_contexts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_vm_replication_contexts_vm_name"), ["vm_name"], unique=False
        )

    op.create_table(
        "backup_jobs",
        sa.Column("id", sa.String(length=191), nullable=False),
        sa.Column("vm_context_id", sa.String(length=191), nullable=False),
        sa.Column("vm_name", sa.String(length=255), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("parent_backup_id", sa.String(length=191), nullable=True),
        sa.Column("backup_type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("snapshot_kind", sa.String(length=32), nullable=True),
        sa.Column("bytes_transferred", sa.BigInteger(), nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_backup_jobs_node_id_nodes"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["parent_backup_id"],
            ["backup_jobs.id"],
            name=op.f("fk_backup_jobs_parent_backup_id_backup_jobs"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["backup_repositories.id"],
            name=op.f("fk_backup_jobs_repository_id_backup_repositories"),
        ),
        sa.ForeignKeyConstraint(
            ["vm_context_id"],
            ["vm_replication_contexts.context_id"],
            name=op.f("fk_backup_jobs_vm_context_id_vm_replication_contexts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup_jobs")),
    )
    with op.batch_alter_table("backup_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_backup_jobs_status"), ["status"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_backup_jobs_vm_context_id"), ["vm_context_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_backup_jobs_vm_name"), ["vm_name"], unique=False)

    op.create_table(
        "vm_disks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("vm_context_id", sa.String(length=191), nullable=False),
        sa.Column("disk_key", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=True),
        sa.Column("capacity_bytes", sa.BigInteger(), nullable=False),
        sa.Column("datastore", sa.String(length=255), nullable=True),
        sa.Column("vmdk_path", sa.String(length=1024), nullable=True),
        sa.Column("controller_key", sa.Integer(), nullable=True),
        sa.Column("unit_number", sa.Integer(), nullable=True),
        sa.Column("change_id", sa.String(length=255), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vm_context_id"],
            ["vm_replication_contexts.context_id"],
            name=op.f("fk_vm_disks_vm_context_id_vm_replication_contexts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vm_disks")),
        sa.UniqueConstraint("vm_context_id", "disk_key", name=op.f("uq_vm_disks_vm_context_id")),
    )
    op.create_table(
        "backup_disks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("backup_job_id", sa.String(length=191), nullable=False),
        sa.Column("disk_key", sa.Integer(), nullable=False),
        sa.Column("nbd_export_name", sa.String(length=255), nullable=False),
        sa.Column("nbd_port", sa.Integer(), nullable=True),
        sa.Column("qcow2_path", sa.String(length=1024), nullable=False),
        sa.Column("parent_qcow2_path", sa.String(length=1024), nullable=True),
        sa.Column("qemu_nbd_pid", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("bytes_zero", sa.BigInteger(), nullable=False),
        sa.Column("qcow2_size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("change_id", sa.String(length=255), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["backup_job_id"],
            ["backup_jobs.id"],
            name=op.f("fk_backup_disks_backup_job_id_backup_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup_disks")),
        sa.UniqueConstraint(
            "backup_job_id", "disk_key", name=op.f("uq_backup_disks_backup_job_id")
        ),
    )
    with op.batch_alter_table("backup_disks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_backup_disks_backup_job_id"), ["backup_job_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("backup_disks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_backup_disks_backup_job_id"))

    op.drop_table("backup_disks")
    op.drop_table("vm_disks")
    with op.batch_alter_table("backup_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_backup_jobs_vm_name"))
        batch_op.drop_index(batch_op.f("ix_backup_jobs_vm_context_id"))
        batch_op.drop_index(batch_op.f("ix_backup_jobs_status"))

    op.drop_table("backup_jobs")
    with op.batch_alter_table("vm_replication_contexts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vm_replication_contexts_vm_name"))

    op.drop_table("vm_replication_contexts")
    op.drop_table("vmware_credentials")
    op.drop_table("nodes")
    op.drop_table("backup_repositories")
