"""Migrations and the seed's contract on both SQLite and a real MariaDB."""

from __future__ import annotations

from sqlalchemy import inspect, text

from engine.db.models import VMReplicationContext, VMwareCredential
from engine.db.session import current_revision, engine_for, session_scope, upgrade


def test_upgrade_creates_seed_tables_and_is_idempotent(db_url: str) -> None:
    upgrade(db_url)
    first = current_revision(db_url)
    upgrade(db_url)
    assert current_revision(db_url) == first == "0004"
    tables = set(inspect(engine_for(db_url)).get_table_names())
    assert {
        "vmware_credentials",
        "vm_replication_contexts",
        "vm_disks",
        "backup_repositories",
        "backup_jobs",
        "backup_disks",
        "nodes",
        "restore_jobs",
        "restore_disks",
        "restore_exports",
        "backup_policies",
        "policy_runs",
    } <= tables
    cols = {c["name"] for c in inspect(engine_for(db_url)).get_columns("vm_replication_contexts")}
    assert {
        "context_id",
        "vm_name",
        "vmware_vm_id",
        "vm_path",
        "vcenter_host",
        "datacenter",
        "credential_id",
    } <= cols
    jobs = {c["name"] for c in inspect(engine_for(db_url)).get_columns("backup_jobs")}
    assert "parent_backup_id" in jobs  # restore points form chains
    assert {"verification", "vm_config"} <= jobs  # restore points are verified, VMs rebuilt


def test_seed_verification_query_runs_unchanged(db_url: str) -> None:
    upgrade(db_url)
    with session_scope(db_url) as s:
        cred = VMwareCredential(
            credential_name="c",
            vcenter_host="quad-vcenter-01.quadris.local",
            username="u",
            password_encrypted=b"x",
            key_fingerprint="f",
        )
        s.add(cred)
        s.flush()
        s.add(
            VMReplicationContext(
                context_id="ctx-pgtest1-20251006-203401",
                vm_name="pgtest1",
                vmware_vm_id="vm-42",
                vm_path="/DatabanxDC/vm/pgtest1",
                vcenter_host="quad-vcenter-01.quadris.local",
                datacenter="DatabanxDC",
                credential_id=cred.id,
            )
        )
        cred_id = cred.id
    with engine_for(db_url).connect() as conn:
        rows = conn.execute(
            text(
                "SELECT context_id, vm_name, vcenter_host, credential_id "
                "FROM vm_replication_contexts WHERE vm_name = 'pgtest1';"
            )
        ).all()
    assert rows == [
        ("ctx-pgtest1-20251006-203401", "pgtest1", "quad-vcenter-01.quadris.local", cred_id)
    ]


def test_migrations_build_exactly_the_models_tables(db_url: str) -> None:
    """The migrations and engine/db/models.py describe one schema: a column added to a
    model without its migration (or the other way round) fails here, not on an upgraded
    hub in the field."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from engine.db.models import Base

    upgrade(db_url)
    with engine_for(db_url).connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
