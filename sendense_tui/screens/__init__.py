"""The console's screens: one per mode, plus modals."""
