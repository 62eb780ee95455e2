"""bitstreams: see README."""
