"""The wire: every shape that crosses a process boundary, as pydantic models.

Hub, node, ``sendense-backup-client``, CLI and console build and read these shapes only
through the models here, so a field is named, typed and validated in one place and
``/openapi.json`` describes exactly what is sent. The package imports nothing else of
the engine (an import-linter contract keeps it so): the console may load it.

- ``status``: job, disk, node-job, snapshot and tunnel states as enums.
- ``fields``: the validated scalar types every model uses (ids, names, hosts, paths).
- ``targets``: the seed's ``<key>:nbd://host:port/export[,...]`` string as a model.
- ``progress``: the client's progress lines, a union discriminated by ``type``.
- ``inventory``: a vCenter's inventory (datacenters, folders, VMs, disks).
- ``hub``: requests and answers of the hub API.
- ``node``: requests and answers of the node API.
"""
