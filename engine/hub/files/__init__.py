"""Single files out of a restore point, without mounting: a point's disk is read over a
private NBD export (``reader``), its partitions and file systems are found and opened
with the Dissect parsers (``volumes``, ``filesystems``), entries and streams are made
from them (``tarstream``), and ``sessions`` keeps a browser's many requests on one
qemu-nbd and one set of parsed file systems. ``service.FileService`` is what the routes
call."""
