"""Sendense engine: backs up vSphere VMs into qcow2 restore points. No UI code lives here."""
