"""``sendense-backup-client``: snapshot a VM, copy every disk into its NBD target, clean up.

- ``cli``: the seed's ``migrate`` flags, the password's way in, exit codes; ``main``.
- ``migration``: the steps of one run, each with the clean-up it owes.
- ``logs``: the job's log file, with the password redacted from whatever is logged.

``python -m engine.node.client`` runs it where the script is not installed.
"""
