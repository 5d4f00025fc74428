"""Offline evaluation of hybridrec's strategies through the real indexing, profile and retrieval code."""
