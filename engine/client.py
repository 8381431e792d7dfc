"""Placeholder until sendense-backup-client lands (issue 4)."""

import sys


def main() -> None:
    print("sendense-backup-client: not built yet", file=sys.stderr)
    sys.exit(1)
