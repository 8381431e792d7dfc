"""A read-only file-like object over libnbd ``pread``: what the Dissect parsers read.

The parsers issue many small reads (superblocks, inodes, directory blocks, one FAT
sector at a time) that would each cost an NBD round trip; they are served from aligned
blocks kept in an LRU cache. Large reads (file contents) go straight through, in pieces
no bigger than an NBD request may be, so a file's bytes do not wash the metadata out of
the cache. Not thread-safe: its session's lock guards it, like the parsers' objects.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from contextlib import suppress

import nbd

from engine.errors import SendenseError

BLOCK = 64 * 1024
CACHE_BLOCKS = 512  # 32 MiB of metadata
STRAIGHT = 4 * BLOCK  # reads from this size on bypass the cache
MAX_REQUEST = 32 * 1024 * 1024  # qemu-nbd's largest request


class NbdReader(io.RawIOBase):
    def __init__(self, uri: str, name: str) -> None:
        super().__init__()
        self.name_ = name  # for messages: the point and disk
        self.handle = nbd.NBD()
        try:
            self.handle.connect_uri(uri)
        except nbd.Error as exc:
            raise SendenseError(f"cannot read {name}: {exc}") from None
        self.size = self.handle.get_size()
        self.pos = 0
        self.cache: OrderedDict[int, bytes] = OrderedDict()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def _pread(self, length: int, offset: int) -> bytes:
        try:
            return bytes(self.handle.pread(length, offset))
        except nbd.Error as exc:
            raise SendenseError(
                f"reading {self.name_} at byte {offset} ({length} bytes) failed: {exc}"
            ) from None

    def _block(self, index: int) -> bytes:
        block = self.cache.get(index)
        if block is not None:
            self.cache.move_to_end(index)
            return block
        offset = index * BLOCK
        block = self._pread(min(BLOCK, self.size - offset), offset)
        self.cache[index] = block
        if len(self.cache) > CACHE_BLOCKS:
            self.cache.popitem(last=False)
        return block

    def pread(self, length: int, offset: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer at the end of the disk)."""
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        if length >= STRAIGHT:
            pieces = []
            for at in range(offset, offset + length, MAX_REQUEST):
                pieces.append(self._pread(min(MAX_REQUEST, offset + length - at), at))
            return b"".join(pieces)
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        if first == last:
            start = offset - first * BLOCK
            return self._block(first)[start : start + length]
        data = b"".join(self._block(i) for i in range(first, last + 1))
        start = offset - first * BLOCK
        return data[start : start + length]

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self.pos
        data = self.pread(size, self.pos)
        self.pos += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.cache.clear()
            with suppress(nbd.Error):
                self.handle.shutdown()
        super().close()
