"""The hub's backup jobs: start one, follow it, end it — and undo what a failure left.

- ``plan``: what a start needs, checked in one go (VM context, repository, node, login,
  disks with their files and export names) as a typed ``JobPlan``.
- ``starting``: the plan's qcow2 files and exports, then the node's client; all undone
  when any step fails.
- ``following``: the node's progress lines, the flushes, the watch round.
- ``ending``: outcome, ``qemu-img check``, the final rows; cancel.
- ``restart``: the jobs a restarted hub finds active.
- ``live``: the running jobs in memory, and what every phase shares.
"""

from engine.hub.jobs.manager import JobManager
from engine.hub.jobs.plan import export_name

__all__ = ["JobManager", "export_name"]
