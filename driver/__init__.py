"""driver: see README."""
