"""Environments as sandboxes: the Debian images they run on, bubblewrap sandboxes, each owner's
host uid, and resource limits."""
