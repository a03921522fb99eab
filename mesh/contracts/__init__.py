"""
Layer 1, records and contracts.

Typed records, enums, errors, strict parsing, scopes, the path gate and ledger events.
Private: import from ``mesh``.
"""
