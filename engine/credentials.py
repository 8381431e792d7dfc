"""VMwareCredentialService: vCenter passwords sealed with AES-256-GCM.

The 32-byte master key lives in a 0600 key file, created on first use. Every encryption
has a fresh nonce, and associated data binds the ciphertext to its row (id, host, user),
so copying one row's ciphertext into another row fails to decrypt instead of handing out
the wrong password. ``seal``/``unseal`` are the same sealing for other secrets (a policy's
notification URLs), their associated data naming what the bytes are for; a rotation
re-seals those too.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.db.models import BackupPolicy, VMwareCredential
from engine.errors import BadInput, NotFound, SendenseError

KEY_BYTES = 32
NONCE_BYTES = 12
# The associated data of a policy's sealed notification URLs (engine.hub.policies.notify).
POLICY_NOTIFY = b"sendense:policy-notify"


class CredentialError(SendenseError, http_status=422):
    """A credential that cannot be stored or opened; the message names it, never the secret."""


class CredentialInputError(CredentialError, BadInput):
    """A credential refused as given (empty password, name taken): exit code 2."""


class CredentialNotFound(NotFound, CredentialError):
    """No credential with that id: exit code 7, HTTP 404."""


@dataclass(frozen=True)
class Credentials:
    id: int
    name: str
    vcenter_host: str
    username: str
    password: str
    thumbprint: str | None

    def __repr__(self) -> str:  # never let a password reach a log through repr()
        return (
            f"Credentials(id={self.id}, name={self.name!r}, vcenter_host={self.vcenter_host!r},"
            f" username={self.username!r}, password='********')"
        )


def fingerprint(key: bytes) -> str:
    """A short public name for a key, stored beside each ciphertext."""
    return hashlib.sha256(b"sendense-master-key:" + key).hexdigest()[:16]


def write_private(path: Path, data: bytes) -> None:
    """Write a file that is 0600 from its first byte (no window where others can read it)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_or_create_key(path: Path) -> bytes:
    """The master key at ``path``, made on first use."""
    if not path.exists():
        write_private(path, secrets.token_bytes(KEY_BYTES))
    data = path.read_bytes()
    if len(data) != KEY_BYTES:
        raise CredentialError(f"master key file {path} holds {len(data)} bytes, expected 32")
    return data


class SealBroken(CredentialError):
    """Sealed bytes that do not open with this key for this purpose: sealed under another
    master key, for another purpose, or altered."""


def seal(key: bytes, plain: bytes, aad: bytes) -> bytes:
    """``plain`` sealed with AES-256-GCM under a fresh nonce (stored first); ``aad`` names
    what the bytes are for, so they open for that purpose only."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plain, aad)


def unseal(key: bytes, blob: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce
        raise SealBroken(
            "sealed data does not open with this master key: sealed under another key, or altered"
        ) from None


def _aad(row: VMwareCredential) -> bytes:
    return f"vmware_credentials:{row.id}:{row.vcenter_host}:{row.username}".encode()


def _seal(key: bytes, row: VMwareCredential, password: str) -> bytes:
    return seal(key, password.encode(), _aad(row))


def _open(key: bytes, row: VMwareCredential) -> str:
    try:
        plain = unseal(key, row.password_encrypted, _aad(row))
    except SealBroken:
        if row.key_fingerprint != fingerprint(key):
            raise CredentialError(
                f"credential {row.id} ({row.credential_name}) was sealed with master key "
                f"{row.key_fingerprint}, but the key file holds {fingerprint(key)}"
            ) from None
        raise CredentialError(
            f"credential {row.id} ({row.credential_name}) failed its integrity check: "
            "the stored ciphertext was altered or moved from another row"
        ) from None
    return plain.decode()


class VMwareCredentialService:
    """Stores, reads and re-keys vCenter credentials."""

    def __init__(self, session: Session, key_path: Path) -> None:
        self.session = session
        self.key_path = key_path

    @property
    def key(self) -> bytes:
        self._finish_interrupted_rotation()
        return load_or_create_key(self.key_path)

    def _finish_interrupted_rotation(self) -> None:
        """A ``.new`` key left by a rotation that committed but died before the rename."""
        pending = self.key_path.with_name(self.key_path.name + ".new")
        if not pending.exists():
            return
        if self._sealed_under(pending.read_bytes()):
            os.replace(pending, self.key_path)
        else:
            pending.unlink()

    def _sealed_under(self, key: bytes) -> bool:
        """Whether the rotation to ``key`` committed: the credentials' fingerprints say,
        or, with none stored, whether a policy's notification URLs open with it."""
        sealed = {row.key_fingerprint for row in self.list()}
        if sealed:
            return sealed == {fingerprint(key)}
        policy = next(iter(self._policies()), None)
        if policy is None or policy.notify_sealed is None:
            return False
        try:
            unseal(key, policy.notify_sealed, POLICY_NOTIFY)
        except SealBroken:
            return False
        return True

    def _policies(self) -> list[BackupPolicy]:
        """The policies whose notification URLs are sealed with the master key."""
        query = select(BackupPolicy).where(BackupPolicy.notify_sealed.is_not(None))
        return list(self.session.scalars(query.order_by(BackupPolicy.id)))

    def add(
        self,
        *,
        host: str,
        username: str,
        password: str,
        thumbprint: str | None = None,
        name: str | None = None,
        datacenter: str | None = None,
    ) -> VMwareCredential:
        if not password:
            raise CredentialInputError("the password is empty")
        key = self.key
        name = name or f"{username}@{host}"
        if self.session.scalar(
            select(VMwareCredential).where(VMwareCredential.credential_name == name)
        ):
            raise CredentialInputError(f"a credential named {name!r} already exists")
        row = VMwareCredential(
            credential_name=name,
            vcenter_host=host,
            username=username,
            password_encrypted=b"",
            key_fingerprint=fingerprint(key),
            thumbprint=thumbprint,
            datacenter=datacenter,
        )
        self.session.add(row)
        self.session.flush()  # the id is part of the associated data
        row.password_encrypted = _seal(key, row, password)
        self.session.flush()
        return row

    def get_row(self, credential_id: int) -> VMwareCredential:
        row = self.session.get(VMwareCredential, credential_id)
        if row is None:
            raise CredentialNotFound(f"credential {credential_id} does not exist")
        return row

    def get_credentials(self, credential_id: int) -> Credentials:
        row = self.get_row(credential_id)
        return Credentials(
            id=row.id,
            name=row.credential_name,
            vcenter_host=row.vcenter_host,
            username=row.username,
            password=_open(self.key, row),
            thumbprint=row.thumbprint,
        )

    def list(self) -> list[VMwareCredential]:
        return list(self.session.scalars(select(VMwareCredential).order_by(VMwareCredential.id)))

    def delete(self, credential_id: int) -> None:
        self.session.delete(self.get_row(credential_id))
        self.session.flush()

    def rotate(self) -> int:
        """Re-seal every credential (and policy's notification URLs) under a new master
        key, all or nothing; the number of credentials.

        The new key is written beside the old one first; the rows are re-sealed in the
        caller's transaction; the key file is replaced only after that commits. If the
        process dies in between, the ``.new`` key file is still there to open the rows.
        """
        old_key = self.key
        new_key = secrets.token_bytes(KEY_BYTES)
        rows = self.list()
        plain = {row.id: _open(old_key, row) for row in rows}  # fails before anything changes
        policies = self._policies()
        urls = {p.id: self._open_policy(old_key, p) for p in policies}
        pending = self.key_path.with_name(self.key_path.name + ".new")
        write_private(pending, new_key)
        try:
            for row in rows:
                row.password_encrypted = _seal(new_key, row, plain[row.id])
                row.key_fingerprint = fingerprint(new_key)
            for policy in policies:
                policy.notify_sealed = seal(new_key, urls[policy.id], POLICY_NOTIFY)
            self.session.commit()
        except BaseException:
            self.session.rollback()
            pending.unlink(missing_ok=True)
            raise
        os.replace(pending, self.key_path)
        return len(rows)

    @staticmethod
    def _open_policy(key: bytes, policy: BackupPolicy) -> bytes:
        assert policy.notify_sealed is not None
        try:
            return unseal(key, policy.notify_sealed, POLICY_NOTIFY)
        except SealBroken:
            raise CredentialError(
                f"policy {policy.name}'s notification URLs do not open with the master key; "
                "give them again (policy edit --notify) before rotating"
            ) from None
