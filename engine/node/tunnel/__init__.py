"""The node's SSH tunnel to the hub.

- ``forwards``: the seed's forwards from the settings, and the hub's ``authorized_keys``
  options that allow exactly those.
- ``status``: the state file every tunnel process writes and anyone reads
  (``read_status`` answers the contract's ``TunnelStatus``).
- ``connection``: ``Tunnel``, one SSH connection holding the forwards, reconnecting.
- ``serve``: a tunnel as a service (signals, logging); ``worker``: an extra connection's
  process.

Import the module you need: this package loads nothing itself, so reading the status
(the node's health, ``sendense tunnel status``) does not pay for asyncssh.
"""
