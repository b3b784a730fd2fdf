"""Environments in bubblewrap sandboxes, and the Debian images (root filesystems) they run on."""
