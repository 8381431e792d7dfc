"""The node (the seed's SNA): what only a machine beside vSphere runs.

- ``app``: the node API; ``runner``: one ``sendense-backup-client`` per job; ``job``: a
  job's process and undelivered lines; ``relay``: those lines to the hub.
- ``client``: ``sendense-backup-client`` itself; ``copier`` and ``sources``: the data path
  (import no service); ``progress``: how a copy's lines are shown.
- ``tunnel``: the SSH tunnel to the hub.
"""
