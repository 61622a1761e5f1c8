"""`python -m tools.soak`: the exporter under scrapers, restarts, terminations and a flood for
minutes, on loopback, and the invariants that must hold throughout.

Modules: ``exporter`` (the process, its web config, RSS and log), ``load`` (the clients),
``faults`` (restarts, terminations and their windows), ``verdict`` (figures and invariants),
``run`` (the whole soak, also called by ``tests/e2e/test_soak.py``).
"""
