"""The qcow2 files behind exports: made new, never over an existing file, and checked
before qemu-nbd is asked to serve one (its own error for a wrong file is obscure)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from engine.errors import BadInput
from engine.hub.exports.errors import ExportError

QCOW2_MAGIC = b"QFI\xfb"


def create_image(qemu_img: str, path: Path, size_bytes: int, backing: Path | None = None) -> None:
    """A new qcow2 (on ``backing`` when given, a qcow2, named in the new file relative to
    its folder so that a repository moved whole still reads); an existing file is never
    overwritten."""
    if size_bytes <= 0:
        raise BadInput(f"image size must be positive, not {size_bytes}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # claim the name atomically: qemu-img itself would truncate an existing file
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise ExportError(f"{path} already exists; images are never overwritten") from None
    argv = [qemu_img, "create", "-q", "-f", "qcow2"]
    if backing is not None:
        backing = Path(os.path.relpath(Path(backing).absolute(), path.absolute().parent))
        argv += ["-b", str(backing), "-F", "qcow2"]
    argv += [str(path), str(size_bytes)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise ExportError(f"cannot run {qemu_img}: {exc.strerror}") from None
    if done.returncode != 0:
        path.unlink(missing_ok=True)
        reason = "; ".join(line.strip() for line in done.stderr.splitlines() if line.strip())
        raise ExportError(f"qemu-img could not create {path}: {reason}")


def image_size(path: Path) -> int | None:
    """A qcow2's virtual size from its header; None when it is not a readable qcow2."""
    try:
        with open(path, "rb") as fh:
            header = fh.read(32)
    except OSError:
        return None
    if len(header) < 32 or header[:4] != QCOW2_MAGIC:
        return None
    return int.from_bytes(header[24:32], "big")


def check_image(name: str, path: Path) -> None:
    """Refuse to export anything but a readable qcow2 image, naming the file."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except FileNotFoundError:
        raise ExportError(f"cannot export {name}: image {path} does not exist") from None
    except OSError as exc:
        raise ExportError(f"cannot export {name}: cannot read {path}: {exc.strerror}") from None
    if magic != QCOW2_MAGIC:
        raise ExportError(f"cannot export {name}: {path} is not a qcow2 image")
