"""Connecting with a stored credential (``vmware_credentials`` row), pinned thumbprint and all."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from engine.credentials import VMwareCredentialService
from engine.errors import VCenterError
from engine.vcenter.connection import VCenter, connect


def connect_stored(session: Session, key_path: Path, credential_id: int) -> VCenter:
    creds = VMwareCredentialService(session, key_path).get_credentials(credential_id)
    if not creds.thumbprint:
        raise VCenterError(
            f"vCenter credential {credential_id} has no pinned thumbprint: "
            "add it again with --thumbprint or --trust"
        )
    return connect(creds.vcenter_host, creds.username, creds.password, thumbprint=creds.thumbprint)
