"""The handlers (service layer): poll a source, apply a change, reconcile, record dead letters. They
talk to the world only through the ports (domain/ports.py and the Protocols beside each handler);
they import no adapter (tests/unit/test_layers.py): wiring.py passes the adapters in."""
