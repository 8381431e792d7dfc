"""Sealed vCenter credentials on SQLite and MariaDB: round trip, tamper, wrong key, rotation."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import update

from engine.credentials import CredentialError, VMwareCredentialService, fingerprint
from engine.db.models import VMwareCredential
from engine.db.session import engine_for, session_scope, upgrade

PASSWORD = "Pl41ntext-Should-Never-Show-7f3a"
OTHER = "An0ther-Secret-Value-91cd"


@pytest.fixture
def db(db_url: str) -> str:
    upgrade(db_url)
    return db_url


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "master.key"


def add(db: str, key_path: Path, password: str = PASSWORD, user: str = "admin") -> int:
    with session_scope(db) as s:
        row = VMwareCredentialService(s, key_path).add(
            host="vc.example.test", username=user, password=password, thumbprint="ab" * 32
        )
        return row.id


def password_of(db: str, key_path: Path, credential_id: int) -> str:
    with session_scope(db) as s:
        return VMwareCredentialService(s, key_path).get_credentials(credential_id).password


def set_blob(db: str, credential_id: int, blob: bytes) -> None:
    with session_scope(db) as s:
        s.execute(
            update(VMwareCredential)
            .where(VMwareCredential.id == credential_id)
            .values(password_encrypted=blob)
        )


def blob_of(db: str, credential_id: int) -> bytes:
    with session_scope(db) as s:
        row = s.get(VMwareCredential, credential_id)
        assert row is not None
        return row.password_encrypted


def test_round_trip_and_key_file_is_private(db: str, key_path: Path) -> None:
    cid = add(db, key_path)
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert key_path.parent.stat().st_mode & 0o777 == 0o700
    assert len(key_path.read_bytes()) == 32
    with session_scope(db) as s:
        creds = VMwareCredentialService(s, key_path).get_credentials(cid)
    assert creds.password == PASSWORD
    assert (creds.vcenter_host, creds.username, creds.thumbprint) == (
        "vc.example.test",
        "admin",
        "ab" * 32,
    )
    assert PASSWORD not in repr(creds)
    # A fresh nonce per encryption: the same password seals to different bytes.
    second = add(db, key_path, user="other")
    assert blob_of(db, cid)[12:] != blob_of(db, second)[12:]


def test_tampered_ciphertext_names_the_credential(db: str, key_path: Path) -> None:
    cid = add(db, key_path)
    blob = bytearray(blob_of(db, cid))
    blob[-1] ^= 0x01
    set_blob(db, cid, bytes(blob))
    with pytest.raises(CredentialError) as caught:
        password_of(db, key_path, cid)
    message = str(caught.value)
    assert f"credential {cid} (admin@vc.example.test)" in message
    assert "integrity" in message and PASSWORD not in message


def test_swapped_ciphertexts_do_not_open(db: str, key_path: Path) -> None:
    first = add(db, key_path, PASSWORD, user="one")
    second = add(db, key_path, OTHER, user="two")
    a, b = blob_of(db, first), blob_of(db, second)
    set_blob(db, first, b)
    set_blob(db, second, a)
    for cid in (first, second):
        with pytest.raises(CredentialError, match=f"credential {cid} .*integrity"):
            password_of(db, key_path, cid)


def test_wrong_key_file_names_both_fingerprints(db: str, key_path: Path, tmp_path: Path) -> None:
    cid = add(db, key_path)
    other_key = tmp_path / "other.key"
    other_key.write_bytes(b"\x01" * 32)
    with pytest.raises(CredentialError) as caught:
        password_of(db, other_key, cid)
    message = str(caught.value)
    assert fingerprint(key_path.read_bytes()) in message
    assert fingerprint(b"\x01" * 32) in message
    assert f"credential {cid}" in message


def test_short_key_file_is_refused(db: str, key_path: Path) -> None:
    key_path.parent.mkdir(parents=True)
    key_path.write_bytes(b"short")
    with pytest.raises(CredentialError, match="holds 5 bytes, expected 32"):
        add(db, key_path)


def test_rotation_reseals_every_row_and_retires_the_old_key(
    db: str, key_path: Path, tmp_path: Path
) -> None:
    ids = [add(db, key_path, PASSWORD, "one"), add(db, key_path, OTHER, "two")]
    old = tmp_path / "old.key"
    shutil.copy(key_path, old)
    with session_scope(db) as s:
        assert VMwareCredentialService(s, key_path).rotate() == 2
    assert key_path.read_bytes() != old.read_bytes()
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert not key_path.with_name("master.key.new").exists()
    assert [password_of(db, key_path, i) for i in ids] == [PASSWORD, OTHER]
    for cid in ids:
        with pytest.raises(CredentialError, match=fingerprint(old.read_bytes())):
            password_of(db, old, cid)


def test_rotation_is_all_or_nothing(db: str, key_path: Path) -> None:
    good = add(db, key_path, PASSWORD, "good")
    bad = add(db, key_path, OTHER, "bad")
    blob = bytearray(blob_of(db, bad))
    blob[20] ^= 0xFF
    set_blob(db, bad, bytes(blob))
    key_before = key_path.read_bytes()
    good_blob = blob_of(db, good)
    with session_scope(db) as s, pytest.raises(CredentialError, match=f"credential {bad} "):
        VMwareCredentialService(s, key_path).rotate()
    assert key_path.read_bytes() == key_before
    assert not key_path.with_name("master.key.new").exists()
    assert blob_of(db, good) == good_blob
    assert password_of(db, key_path, good) == PASSWORD


def test_rotation_interrupted_before_the_key_rename_is_finished_on_next_use(
    db: str, key_path: Path, tmp_path: Path
) -> None:
    cid = add(db, key_path)
    old = key_path.read_bytes()
    with session_scope(db) as s:
        VMwareCredentialService(s, key_path).rotate()
    # Recreate the state of a crash after the commit and before the rename.
    key_path.with_name("master.key.new").write_bytes(key_path.read_bytes())
    key_path.write_bytes(old)
    assert password_of(db, key_path, cid) == PASSWORD
    assert key_path.read_bytes() != old
    assert not key_path.with_name("master.key.new").exists()


def test_no_plaintext_password_in_the_database(
    db: str, key_path: Path, request: pytest.FixtureRequest
) -> None:
    add(db, key_path, PASSWORD, "one")
    add(db, key_path, OTHER, "two")
    needles = [PASSWORD.encode(), OTHER.encode()]
    if db.startswith("sqlite"):
        engine_for(db).dispose()
        path = Path(db.removeprefix("sqlite:///"))
        stored = b"".join(
            p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)
        )
        assert b"vc.example.test" in stored  # the search does see the rows
    else:
        server = request.getfixturevalue("mariadb")
        name = db.rsplit("/", 1)[1].split("?")[0]
        stored = subprocess.run(
            ["mariadb-dump", f"--socket={server.socket}", "-uroot", name, "vmware_credentials"],
            check=True,
            capture_output=True,
        ).stdout
        assert b"vc.example.test" in stored
    for needle in needles:
        assert needle not in stored
