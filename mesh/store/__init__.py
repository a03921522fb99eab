"""
Layer 5, the run store.

Durable runs on a real repository (SQLite store, resume). Private: import from ``mesh``.
"""
