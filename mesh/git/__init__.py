"""
Layer 4b, git workspaces and adapters.

The shadow repository, worktrees, the target check, the integrator and the built-in role
adapters. Private: import from ``mesh``.
"""
