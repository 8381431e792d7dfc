"""NBD: the qemu-nbd export manager (``exports``) that the hub owns, and its helpers."""
