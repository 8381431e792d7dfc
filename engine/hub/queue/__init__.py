"""The queue: jobs waiting for room, and the dispatch that starts them within limits.

``dispatch`` is the decision alone (pure: queued jobs, nodes and load in, assignments
out), so it is tested and benchmarked without a database; ``store`` keeps the queue in
the ``backup_jobs`` table; ``dispatcher`` is the hub's round that joins the two and
starts what was assigned.
"""
