"""Tools run by hand against a throwaway stack (``python -m tools.soak``); not part of the wheel."""
