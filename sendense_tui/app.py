"""Placeholder until the console lands (issue 6)."""

import sys


def main() -> None:
    print("sendense-tui: the console is not built yet", file=sys.stderr)
    sys.exit(1)
