"""Policies: scheduled backups of VMs named by inventory paths, with retention and
notifications.

``schedule`` reads cron expressions in a timezone (croniter); ``resolve`` turns include
and exclude paths into VMs from vCenter's inventory; ``store`` keeps policies; ``runs``
starts a run (its VMs queued) and ends it when every job ended; ``scheduler`` fires due
runs once, catching up a missed one within the grace window; ``retention`` expires
points (GFS) by merging chains; ``notify`` tells someone (Apprise). ``service`` is the
one face the routes and rounds call.
"""
