"""
Layer 4a, the host.

Child processes under a reaper, the optional sandbox and run ownership. Private: import
from ``mesh``.
"""
