"""Restores on the hub: restore points, instant exports, and restore jobs (a disk into a
file here, a whole VM into vCenter through a node)."""
