"""The adapters: the only modules that talk to Firestore, Classroom, Pub/Sub, Secret Manager, Cloud
Storage, Clever and OneRoster. They implement the ports; they import no handler (app) and nothing
of admin (tests/unit/test_layers.py)."""
