"""Verified restore points: digest tables beside the qcow2 files, and ``verify``."""
