"""The copier's chunk digests against real servers: each is xxh3-128 of that chunk of
the source, holes and zero runs included, and every chunk is reported exactly once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xxhash

from engine.node.copier import CopyOptions, Extent, copy
from engine.node.copier.digests import align_allocation, align_extents
from tests.nbd_servers import nbdkit, qemu_nbd

MiB = 1024 * 1024
CHUNK = 256 * 1024
# Not a multiple of the chunk: the last chunk is short.
SIZE = 9 * MiB + 100 * 1024


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """Data, a hole, written zeroes, a chunk half zero, one byte in a hole, a short end."""
    path = tmp_path / "source.img"
    with path.open("wb") as f:
        f.truncate(SIZE)
        f.write(os.urandom(MiB))
        f.seek(2 * MiB)
        f.write(b"\0" * MiB)  # written zeroes
        f.seek(3 * MiB + CHUNK // 2)
        f.write(os.urandom(CHUNK))  # across two chunks, each half data
        f.seek(6 * MiB + 12345)
        f.write(b"\x01")  # one byte in a hole
        f.seek(SIZE - 5000)
        f.write(os.urandom(5000))  # inside the short last chunk
    return path


def expected(data: bytes, chunk: int) -> dict[int, bytes]:
    return {
        off: xxhash.xxh3_128(data[off : off + chunk]).digest() for off in range(0, len(data), chunk)
    }


def collect(table: dict[int, bytes], chunk: int, seen: list[int]):
    def on_digests(offset: int, digests: bytes) -> None:
        assert offset % chunk == 0 and len(digests) % 16 == 0
        for i in range(0, len(digests), 16):
            off = offset + i // 16 * chunk
            seen.append(off)
            table[off] = digests[i : i + 16]

    return on_digests


@pytest.mark.parametrize("connections", [1, 4])
def test_digests_are_each_chunk_of_the_source_once(
    source: Path, tmp_path: Path, connections: int
) -> None:
    target = tmp_path / "t.qcow2"
    got: dict[int, bytes] = {}
    seen: list[int] = []
    opts = CopyOptions(
        target_is_zero=True,
        chunk_size=CHUNK,
        connections=connections,
        request_size=300 * 1024,  # rounded up to whole chunks
    )
    with nbdkit("file", f"file={source}") as src, qemu_nbd(target, SIZE) as dst:
        final = copy(src, dst, options=opts, digests=collect(got, CHUNK, seen))
    assert final.bytes_done == SIZE
    assert sorted(seen) == list(range(0, SIZE, CHUNK))  # each chunk exactly once
    assert got == expected(source.read_bytes(), CHUNK)


def test_incremental_extents_grow_to_whole_chunks(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "t.qcow2"
    got: dict[int, bytes] = {}
    seen: list[int] = []
    extents = [Extent(CHUNK + 10, 20), Extent(CHUNK + 100, CHUNK), Extent(SIZE - 10, 10)]
    with nbdkit("file", f"file={source}") as src, qemu_nbd(target, SIZE) as dst:
        copy(
            src,
            dst,
            extents=extents,
            options=CopyOptions(target_is_zero=True, chunk_size=CHUNK),
            digests=collect(got, CHUNK, seen),
        )
    want = expected(source.read_bytes(), CHUNK)
    last = (SIZE - 1) // CHUNK * CHUNK
    assert sorted(seen) == [CHUNK, 2 * CHUNK, last]
    assert got == {k: want[k] for k in seen}


def test_no_digests_unless_asked(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "t.qcow2"
    with nbdkit("file", f"file={source}") as src, qemu_nbd(target, SIZE) as dst:
        copy(src, dst, options=CopyOptions(target_is_zero=True), digests=lambda o, d: pytest.fail())


def test_zero_only_for_whole_chunks() -> None:
    parts = [
        (Extent(0, 100), False),
        (Extent(100, 3 * CHUNK - 50), True),  # covers chunks 1 and 2 whole
        (Extent(3 * CHUNK + 50, 50), False),
        (Extent(3 * CHUNK + 100, CHUNK - 100 + 1000), True),  # ends at the unit's end
    ]
    end = 4 * CHUNK + 1000
    assert list(align_allocation(parts, CHUNK, end)) == [
        (Extent(0, CHUNK), False),
        (Extent(CHUNK, 2 * CHUNK), True),
        (Extent(3 * CHUNK, CHUNK), False),
        (Extent(4 * CHUNK, 1000), True),
    ]
    assert align_extents([Extent(5, 1), Extent(CHUNK - 1, 2)], CHUNK, end) == [Extent(0, 2 * CHUNK)]
