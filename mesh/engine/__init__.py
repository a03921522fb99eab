"""
Layer 3, lifecycle and engine.

The unit state machine, the scheduler, the unit pipeline, the call gateway, executors,
resume points and run summaries. Private: import from ``mesh``.
"""
