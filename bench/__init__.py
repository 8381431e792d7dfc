"""Benchmarks: each compares against a named reference in the same run and prints ratios.

.venv/bin/python -m bench              # list them
.venv/bin/python -m bench.<name> ...   # run one (or: python -m bench <name> ...)
"""
