"""A disk's volumes: its partition table's entries (MBR, GPT), the logical volumes of an
LVM2 physical volume found on one, or the whole disk when it has no table; and what
each holds, found by its magic numbers before any parser is trusted with it.

Numbers (the contract's): 0 is the whole disk without a table, 1… the table's entries
in its order, logical volumes after the table's entries.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import BinaryIO

from dissect.util.stream import RangeStream
from dissect.volume.disk import Disk
from dissect.volume.disk.schemes import GPT
from dissect.volume.lvm import LVM2

from engine.contract.files import Partition

log = logging.getLogger("sendense.hub.files")

SWAP_PAGE = 4096
ZEROS_PROBE = 1024 * 1024
LVM_SECTOR = 512  # LVM2's metadata counts pe_start and extents in 512-byte sectors
EXT_SUPER = 1024
EXT_COMPAT_JOURNAL = 0x4
EXT4_INCOMPAT = 0x40 | 0x80 | 0x200  # extents, 64bit, flex_bg


@dataclass
class Volume:
    partition: Partition
    open: Callable[[], BinaryIO]


def sniff(fh: BinaryIO) -> str:
    """What the start of a volume holds: a file system's name Sendense reads ("ext4",
    "xfs", "ntfs", "fat", "exfat") or, prefixed with "!", what else is there."""
    fh.seek(0)
    head = fh.read(8192)
    if len(head) >= EXT_SUPER + 100 and head[EXT_SUPER + 56 : EXT_SUPER + 58] == b"\x53\xef":
        compat, incompat = struct.unpack_from("<II", head, EXT_SUPER + 92)
        if incompat & EXT4_INCOMPAT:
            return "ext4"
        return "ext3" if compat & EXT_COMPAT_JOURNAL else "ext2"
    if head[:4] == b"XFSB":
        return "xfs"
    if head[3:11] == b"NTFS    ":
        return "ntfs"
    if head[3:11] == b"EXFAT   ":
        return "exfat"
    if head[510:512] == b"\x55\xaa" and (head[54:57] == b"FAT" or head[82:87] == b"FAT32"):
        return "fat"
    if head[512:520] == b"LABELONE" and head[536:544] == b"LVM2 001":
        return "!LVM2 PV"
    if head[SWAP_PAGE - 10 : SWAP_PAGE] in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return "!swap"
    fh.seek(0)
    if not fh.read(ZEROS_PROBE).strip(b"\0"):
        return "!zeros"
    return "!unknown data"


def _type_text(part: object) -> str | None:
    name = getattr(part, "type_name", None)
    if name and name != "Unknown":
        return str(name)
    return str(getattr(part, "type_str", "")) or None


def _table_volumes(disk: Disk, fh: BinaryIO) -> list[Volume]:
    scheme = "gpt" if isinstance(disk.scheme, GPT) else "mbr"
    volumes = []
    for n, part in enumerate(disk.partitions, start=1):
        size = part.size
        if scheme == "gpt":  # dissect leaves out the last sector of a GPT entry
            size = (part.raw.last_lba - part.raw.first_lba + 1) * disk.sector_size
        offset = part.offset
        volumes.append(
            Volume(
                Partition(
                    number=n,
                    offset_bytes=offset,
                    size_bytes=size,
                    scheme=scheme,
                    type=_type_text(part),
                    name=part.name or None,
                ),
                partial(RangeStream, fh, offset, size),
            )
        )
    return volumes


def _lv_offset(lvm: LVM2, lv: object, pv_offset: int) -> int:
    """Where on the disk a logical volume's first extent is (its first segment's first
    stripe on this PV); the PV's own offset when its metadata does not say."""
    try:
        pv_name, first_extent = lv.segments[0].stripes[0]  # type: ignore[attr-defined]
        pe_start = lvm.vg.physical_volumes[pv_name].pe_start
        return pv_offset + (pe_start + first_extent * lvm.vg.extent_size) * LVM_SECTOR
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return pv_offset


def _logical_volumes(pv: Volume, first: int) -> list[Volume]:
    try:
        lvm = LVM2(pv.open())
        lvs = [lv for lv in lvm.vg.lv if getattr(lv, "is_visible", True)]
    except Exception as exc:  # a PV dissect cannot read stays a PV, said so
        log.info("cannot read the LVM2 PV at byte %d: %s", pv.partition.offset_bytes, exc)
        return []
    volumes = []
    for n, lv in enumerate(lvs, start=first):
        stream = lv.open()
        volumes.append(
            Volume(
                Partition(
                    number=n,
                    offset_bytes=_lv_offset(lvm, lv, pv.partition.offset_bytes),
                    size_bytes=int(getattr(stream, "size", 0) or 0),
                    scheme="lvm",
                    type="LVM2 logical volume",
                    name=f"{lvm.vg.name}/{lv.name}",
                ),
                lv.open,
            )
        )
    return volumes


def find_volumes(fh: BinaryIO, size: int) -> list[Volume]:
    """Every volume of the disk, each with ``filesystem`` or ``found`` filled in."""
    fh.seek(0)
    whole = Volume(Partition(number=0, offset_bytes=0, size_bytes=size), lambda: fh)
    whole_holds = sniff(fh)
    if not whole_holds.startswith("!") or whole_holds == "!LVM2 PV":
        volumes = [whole]  # a file system (or a PV) on the whole disk: no table to read
    else:
        try:
            fh.seek(0)
            volumes = _table_volumes(Disk(fh), fh)
        except Exception:
            volumes = [whole]
    for v in list(volumes):
        _fill(v)
        if v.partition.found == "LVM2 PV":
            for lv in _logical_volumes(v, max(x.partition.number for x in volumes) + 1):
                _fill(lv)
                volumes.append(lv)
    return volumes


def _fill(v: Volume) -> None:
    holds = sniff(v.open())
    if holds.startswith("!"):
        v.partition.found = holds[1:]
    else:
        v.partition.filesystem = holds
