"""Where a restored disk is written: nbdkit serving it writable on a private unix socket.

The other direction of ``sources``. Two kinds. ``datastore``: the node sees the datastore
as files (NFS mounted here; the lab), so the disk becomes a ``monolithicFlat`` VMDK: a
descriptor at the disk's own path (what vSphere reads, the inverse of
``sources.parse_descriptor``) and a sparse flat file of the disk's capacity beside it,
served by nbdkit's ``file`` plugin; a zero run the copier skips stays a hole. ``vddk``:
the production path, nbdkit's ``vddk`` plugin opened writable on the new VM's disk (no
snapshot), its password in a 0600 file like a source's. ``auto`` takes the datastore
when the disk's folder is writable here.

The sinks are ``NbdkitSource`` objects (one nbdkit, one socket, one private folder), so
they start, answer and stop exactly as sources do, from the thread that outlives the copy.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from engine.errors import BadInput, SendenseError, SourceError
from engine.node.sources import NbdkitSource, start_vddk

SINK_KINDS = ("auto", "datastore", "vddk")
SECTOR = 512
# The geometry every VMware descriptor carries (a legacy of IDE; vSphere ignores it for
# SCSI but refuses a descriptor without it).
HEADS, SECTORS_PER_TRACK, MAX_CYLINDERS = 255, 63, 65535


def flat_file_of(descriptor: Path) -> Path:
    """``NAME.vmdk`` → ``NAME-flat.vmdk`` beside it, as vSphere names a flat extent."""
    return descriptor.with_name(descriptor.name.removesuffix(".vmdk") + "-flat.vmdk")


def sectors_of(capacity_bytes: int) -> int:
    """The disk's size in whole sectors: a capacity that is not one is rounded up, so
    that the target never holds less than the source."""
    return -(-capacity_bytes // SECTOR)


def descriptor_text(capacity_bytes: int, flat_name: str, *, thin: bool = True) -> str:
    """A ``monolithicFlat`` descriptor with its one ``FLAT`` extent, ``flat_name``
    (relative to the descriptor's folder)."""
    sectors = sectors_of(capacity_bytes)
    cylinders = max(1, min(sectors // (HEADS * SECTORS_PER_TRACK), MAX_CYLINDERS))
    return (
        "# Disk DescriptorFile\n"
        "version=1\n"
        'encoding="UTF-8"\n'
        f"CID={secrets.randbits(32):08x}\n"
        "parentCID=ffffffff\n"
        'createType="monolithicFlat"\n'
        "\n"
        "# Extent description\n"
        f'RW {sectors} FLAT "{flat_name}" 0\n'
        "\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        'ddb.adapterType = "lsilogic"\n'
        f'ddb.geometry.cylinders = "{cylinders}"\n'
        f'ddb.geometry.heads = "{HEADS}"\n'
        f'ddb.geometry.sectors = "{SECTORS_PER_TRACK}"\n'
        f'ddb.thinProvisioned = "{int(thin)}"\n'
        'ddb.virtualHWVersion = "13"\n'
    )


class DatastoreSink(NbdkitSource):
    """A flat VMDK written in place: the flat file is made (sparse, the disk's size) and
    served before the descriptor is written, and removed again if nbdkit fails, so a
    sink that did not start leaves the folder as it found it."""

    def __init__(self, descriptor: Path, capacity_bytes: int, *, nbdkit: str = "nbdkit") -> None:
        self.descriptor = descriptor
        self.flat = flat_file_of(descriptor)
        self.size = sectors_of(capacity_bytes) * SECTOR
        super().__init__(
            ["file", f"file={self.flat}"], plugin="file", nbdkit=nbdkit, what=str(descriptor)
        )

    def start(self, timeout: float = 10.0) -> DatastoreSink:
        try:
            with self.flat.open("wb") as f:
                f.truncate(self.size)
        except OSError as exc:
            self.close()
            raise SourceError(f"cannot create {self.flat}: {exc.strerror}") from None
        try:
            super().start(timeout)
            self._write_descriptor()
        except BaseException:
            self.close()
            self.flat.unlink(missing_ok=True)
            raise
        return self

    def _write_descriptor(self) -> None:
        """Replace the descriptor whole (a new name, then a rename): never half written."""
        text = descriptor_text(self.size, self.flat.name)
        partial = self.descriptor.with_name(f".{self.descriptor.name}.sendense")
        try:
            partial.write_text(text)
            os.replace(partial, self.descriptor)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise SourceError(f"cannot write {self.descriptor}: {exc.strerror}") from None


def writable_here(descriptor: Path) -> bool:
    folder = descriptor.parent
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def open_sink(
    kind: str,
    file_name: str,
    capacity_bytes: int,
    *,
    locate: Callable[[str], Path],
    vddk: Callable[[], NbdkitSource],
) -> NbdkitSource:
    """A started sink for one disk of the new VM (``[ds] dir/x.vmdk``); ``locate`` maps
    that name to a local path, ``vddk`` builds the production sink."""
    if kind not in SINK_KINDS:
        raise BadInput(f"--target must be one of {', '.join(SINK_KINDS)}, not {kind!r}")
    if kind in ("auto", "datastore"):
        try:
            descriptor = locate(file_name)
        except (SendenseError, OSError) as exc:
            if kind == "datastore":
                raise SourceError(f"disk {file_name}: {exc}") from None
        else:
            if writable_here(descriptor):
                return DatastoreSink(descriptor, capacity_bytes).start()
            if kind == "datastore":
                raise SourceError(
                    f"disk {file_name}: its folder {descriptor.parent} is not writable here"
                )
    return start_vddk(vddk())
