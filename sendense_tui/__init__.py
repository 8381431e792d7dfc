"""The Sendense operator console (Textual). It reaches the engine only through the hub API.

Run ``sendense-tui``. It talks to the hub named by ``SENDENSE_HUB__URL`` (or ``[hub] url``
in the TOML file the engine reads); with none named and no hub answering, it starts
hub and node in the background on the data folder (``SENDENSE_HOME``) as ``sendense run
--no-console --no-lab`` does, and says so. The API token is read from the data folder's
``api-token`` (or ``SENDENSE_API_TOKEN_FILE``). Keys: ``?`` lists them all; rebind any by
its id in ``~/.config/sendense/keymap.toml`` (or ``SENDENSE_KEYMAP``), e.g.
``"inventory.backup" = "B"``.
"""
