"""sim: see README."""
