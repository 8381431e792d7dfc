"""The node (SNA): runs sendense-backup-client per job and relays its progress to the hub."""
