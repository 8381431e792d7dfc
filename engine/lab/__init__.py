"""The vcsim lab: a vCenter to try and test Sendense against (Go source in ``go/``)."""

from engine.lab.launcher import LabError, LabInfo, build, lab_status, start, stop
from engine.lab.setup import ensure_running, lab_dir, register

__all__ = [
    "LabError",
    "LabInfo",
    "build",
    "ensure_running",
    "lab_dir",
    "lab_status",
    "register",
    "start",
    "stop",
]
