"""The domain: roster changes, section-course links, the sync rules, the brake, guardians, the audit
record and the ports. Pure: no I/O, and imports nothing from app, adapters or admin
(tests/unit/test_layers.py)."""
