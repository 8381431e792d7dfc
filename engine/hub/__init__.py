"""The hub (SHA): owns the database, repositories and exports; hands jobs to nodes."""
