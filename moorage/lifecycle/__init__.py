"""Lifecycle: online garbage collection (review queues, re-checked deletes), and the tag
history GC respects. Wired by ``wiring.py``; docs/gc.md explains the design and its races."""
