"""The disk copier: one NBD export into another with libnbd's asynchronous API.

Modelled on nbdcopy: the disk is cut into work units (128 MiB); each connection takes
units in turn, asks the source which parts are allocated (``base:allocation``), reads
the data parts in fixed-size requests with a bounded number in flight (so memory is
``connections * requests_in_flight * request_size`` whatever the disk size), checks
every read block with ``Buffer.is_zero`` (every byte, never a sample), and writes data,
sends zero commands, or skips zeroes when the target is known to be zero already.

The input is a list of extents, so a full copy (the whole disk) and an incremental copy
(the changed areas from CBT) are the same code.

- ``options``: what a copy is asked to do and what it reports (``CopyOptions``,
  ``Progress``).
- ``extents``: where the data is (extents, work units, zero runs).
- ``handles``: libnbd handles, connected all at once and closed politely.
- ``connection``: one source/target pair's commands, as a generator over completions.
- ``engine``: ``copy``: the loops that drive the connections, the progress, the flush.
"""

from engine.node.copier.engine import copy
from engine.node.copier.extents import Extent
from engine.node.copier.options import CopyCancelled, CopyOptions, Progress, ProgressCallback

__all__ = ["CopyCancelled", "CopyOptions", "Extent", "Progress", "ProgressCallback", "copy"]
