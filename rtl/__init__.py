"""rtl: see README."""
