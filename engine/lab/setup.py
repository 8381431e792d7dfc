"""What ``sendense lab up`` does besides starting the lab, so that a newcomer can back up
pgtest1 at once: the lab as a vCenter credential (thumbprint pinned), the default
repository, and pgtest1's context. Running it again changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine.config import Settings
from engine.credentials import VMwareCredentialService
from engine.db.models import VMReplicationContext, VMwareCredential
from engine.db.session import session_scope, upgrade
from engine.lab.launcher import LabInfo, lab_status, start
from engine.repository import ensure_default_repository
from engine.vcenter import connect, find_vm, vm_info
from engine.vcenter.contexts import upsert_context

CREDENTIAL_NAME = "lab"
SEED_VM_PATH = "/DatabanxDC/vm/pgtest1"


@dataclass
class Registration:
    credential_id: int
    repository_id: int
    context_id: str


def register_credential(session: Session, key_path: Path, info: LabInfo) -> int:
    """The lab's credential, re-made when the lab's address or login changed."""
    service = VMwareCredentialService(session, key_path)
    row = session.scalar(
        select(VMwareCredential).where(VMwareCredential.credential_name == CREDENTIAL_NAME)
    )
    if row is not None:
        same = (
            row.vcenter_host == info.host
            and row.username == info.user
            and row.thumbprint == info.thumbprint
            and service.get_credentials(row.id).password == info.password
        )
        if same:
            return row.id
        old_id = row.id
        users = list(
            session.scalars(
                select(VMReplicationContext.context_id).where(
                    VMReplicationContext.credential_id == old_id
                )
            )
        )
        service.delete(old_id)
    else:
        users = []
    new = service.add(
        host=info.host,
        username=info.user,
        password=info.password,
        thumbprint=info.thumbprint,
        name=CREDENTIAL_NAME,
        datacenter="DatabanxDC",
    )
    if users:
        session.execute(
            update(VMReplicationContext)
            .where(VMReplicationContext.context_id.in_(users))
            .values(credential_id=new.id, vcenter_host=info.host)
        )
    return new.id


def register(session: Session, settings: Settings, info: LabInfo) -> Registration:
    credential_id = register_credential(session, settings.key_path, info)
    repo = ensure_default_repository(session, settings.repository_default)
    with connect(info.host, info.user, info.password, thumbprint=info.thumbprint) as vc:
        vm = vm_info(vc, find_vm(vc, SEED_VM_PATH))
    ctx = upsert_context(session, vm, credential_id=credential_id, vcenter_host=info.host)
    return Registration(credential_id, repo.id, ctx.context_id)


def lab_dir(settings: Settings) -> Path:
    return settings.home / "lab"


def ensure_running(settings: Settings) -> str:
    """Start the lab on the configured port if it is not running, and register it."""
    running = lab_status(lab_dir(settings))
    info = running or start(lab_dir(settings), port=settings.lab.port)
    upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        reg = register(session, settings, info)
    state = "running" if running else "started"
    return f"{state} at {info.url} (credential {reg.credential_id})"
