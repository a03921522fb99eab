"""
Layer 2, plan and budget.

Slicing a plan into units, the budget policy, waves and CSV batches. Pure logic, no I/O.
Private: import from ``mesh`` (the CSV batch contract: ``mesh.batch``).
"""
