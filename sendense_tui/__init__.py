"""The Sendense operator console (Textual). It reaches the engine only through the hub API."""
