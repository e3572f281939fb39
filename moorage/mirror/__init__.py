"""Pull-through cache organizations (docs/mirror.md); wiring.py is the capability."""
